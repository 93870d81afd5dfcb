//! The store's root read by independent tools (skopeo, umoci), garbage collection over a real
//! image graph, and locking across processes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use rbuild_oci::oci_spec::image::{Descriptor, MediaType};
use rbuild_oci::{Digest, Reference, canonical_json, media_type};
use rbuild_store::{CacheEntry, PruneOptions, Store, is_oci_ref_name};
use serde_json::json;

/// A one-layer image written into a store.
struct Image {
    manifest: Descriptor,
    manifest_digest: Digest,
    config: Digest,
    layer: Digest,
    diff_id: Digest,
}

/// Builds a layer holding `files` (path, content), stores the gzip blob, the config and the
/// manifest, and unpacks the layer into its layer directory as the engine would.
fn write_image(store: &Store, files: &[(&str, &str)]) -> Image {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, content.as_bytes()).unwrap();
    }
    let tar_bytes = tar.into_inner().unwrap();
    let diff_id = Digest::sha256_of(&tar_bytes);
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar_bytes).unwrap();
    let gz_bytes = gz.finish().unwrap();

    let mut w = store.blob_writer().unwrap();
    w.write_all(&gz_bytes).unwrap();
    let (layer, layer_size) = w.commit(Some(&Digest::sha256_of(&gz_bytes))).unwrap();

    let config_bytes = canonical_json(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [{"created_by": "test"}],
    }))
    .unwrap();
    let config = store.put_blob(&config_bytes).unwrap();

    let manifest_bytes = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": {"mediaType": media_type::OCI_CONFIG, "digest": config.to_string(), "size": config_bytes.len()},
        "layers": [{"mediaType": media_type::OCI_LAYER_GZIP, "digest": layer.to_string(), "size": layer_size}],
    }))
    .unwrap();
    let manifest_digest = store.put_blob(&manifest_bytes).unwrap();

    let staging = store.staging().unwrap();
    tar::Archive::new(&tar_bytes[..])
        .unpack(staging.upper())
        .unwrap();
    store.commit_layer_dir(staging, &diff_id).unwrap();

    Image {
        manifest: Descriptor::new(
            MediaType::ImageManifest,
            manifest_bytes.len() as u64,
            &manifest_digest,
        ),
        manifest_digest,
        config,
        layer,
        diff_id,
    }
}

fn tool(name: &str) -> bool {
    let ok = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("skipping: {name} is not installed");
    }
    ok
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn umoci_unpack(image: &str, bundle: &Path) {
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !nix_is_root() {
        cmd.arg("--rootless");
    }
    run(cmd.arg("--image").arg(image).arg(bundle));
}

fn nix_is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

#[test]
fn skopeo_and_umoci_read_the_root_as_is() {
    if !tool("skopeo") || !tool("umoci") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let store = Store::open(&root).unwrap();
    let image = write_image(&store, &[("hello.txt", "hello from rbuild\n")]);
    let r: Reference = "rbuild-test".parse().unwrap();
    store.tag(&r, image.manifest.clone()).unwrap();
    let ported: Reference = "127.0.0.1:5000/team/app:v1.2".parse().unwrap();
    store.tag(&ported, image.manifest.clone()).unwrap();
    // A docker-valid tag outside the OCI ref.name grammar must not spoil the other names.
    let odd: Reference = "rbuild-test:v1-".parse().unwrap();
    assert!(!is_oci_ref_name(&odd.to_string()));
    store.tag(&odd, image.manifest.clone()).unwrap();

    let name = "docker.io/library/rbuild-test:latest";
    assert_eq!(r.to_string(), name);
    for n in [name, "127.0.0.1:5000/team/app:v1.2"] {
        let out = run(Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:{n}", root.display())));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Digest"], image.manifest_digest.to_string());
        assert_eq!(v["Layers"][0], image.layer.to_string());
        assert_eq!(v["Os"], "linux");
    }
    let config = run(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:{name}", root.display())));
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], image.diff_id.to_string());

    // skopeo copy to a fresh layout, then umoci unpacks it.
    let other = dir.path().join("other");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:{name}", root.display()))
        .arg(format!("oci:{}:x", other.display())));
    let bundle = dir.path().join("bundle");
    umoci_unpack(&format!("{}:x", other.display()), &bundle);
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/hello.txt")).unwrap(),
        "hello from rbuild\n"
    );

    // umoci also reads our root directly, with the full reference as tag.
    let bundle2 = dir.path().join("bundle2");
    umoci_unpack(&format!("{}:{name}", root.display()), &bundle2);
    assert_eq!(
        fs::read_to_string(bundle2.join("rootfs/hello.txt")).unwrap(),
        "hello from rbuild\n"
    );

    // And the other way round: what skopeo writes into our root, we resolve.
    let copied: Reference = "copied:1".parse().unwrap();
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:x", other.display()))
        .arg(format!("oci:{}:{copied}", root.display())));
    let store = Store::open(&root).unwrap();
    let got = store.resolve(&copied).unwrap().unwrap();
    let got_digest = Digest::try_from(got.digest()).unwrap();
    let manifest = store.read_manifest(&got_digest).unwrap();
    assert_eq!(manifest.layers().len(), 1);
    assert!(store.images().unwrap().iter().any(|(n, _)| *n == copied));
    // Our tags survived skopeo's rewrite of index.json.
    assert!(store.resolve(&r).unwrap().is_some());
    assert!(store.resolve(&ported).unwrap().is_some());
}

#[test]
fn prune_keeps_what_tags_reach_and_drops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let kept = write_image(&store, &[("a", "kept")]);
    let gone = write_image(&store, &[("b", "gone")]);
    let kept_ref: Reference = "kept".parse().unwrap();
    let gone_ref: Reference = "gone".parse().unwrap();
    store.tag(&kept_ref, kept.manifest.clone()).unwrap();
    store.tag(&gone_ref, gone.manifest.clone()).unwrap();

    // A multi-platform index whose second manifest was never pulled: prune must skip it.
    let absent = Digest::sha256_of(b"other platform");
    let index_bytes = canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [
            {"mediaType": media_type::OCI_MANIFEST, "digest": kept.manifest_digest.to_string(), "size": kept.manifest.size()},
            {"mediaType": media_type::OCI_MANIFEST, "digest": absent.to_string(), "size": 10},
        ],
    }))
    .unwrap();
    let index = store.put_blob(&index_bytes).unwrap();
    let multi: Reference = "multi:1".parse().unwrap();
    store
        .tag(
            &multi,
            Descriptor::new(MediaType::ImageIndex, index_bytes.len() as u64, &index),
        )
        .unwrap();

    let orphan_blob = store.put_blob(b"orphan").unwrap();
    let orphan_layer = Digest::sha256_of(b"orphan layer");
    let staging = store.staging().unwrap();
    fs::write(staging.upper().join("f"), b"1234").unwrap();
    store.commit_layer_dir(staging, &orphan_layer).unwrap();
    let stale_tmp = store.root().join("tmp/staging-2147483646-x");
    fs::create_dir_all(stale_tmp.join("upper")).unwrap();

    store
        .cache_put(
            "uses-kept",
            &CacheEntry {
                blobs: vec![kept.layer.clone()],
                layer_dirs: vec![kept.diff_id.clone()],
                payload: json!("k"),
            },
        )
        .unwrap();
    store
        .cache_put(
            "uses-gone",
            &CacheEntry {
                blobs: vec![gone.layer.clone()],
                layer_dirs: vec![],
                payload: json!("g"),
            },
        )
        .unwrap();

    assert!(store.untag(&gone_ref).unwrap());
    let report = store.prune(PruneOptions::default()).unwrap();
    // gone: manifest, config, layer; plus the orphan blob.
    assert_eq!(report.blobs, 4, "{report:?}");
    assert_eq!(report.layer_dirs, 2, "{report:?}");
    assert_eq!(report.cache_entries, 1, "{report:?}");
    assert_eq!(report.temps, 1, "{report:?}");
    assert!(report.bytes_freed >= 4 + 6, "{report:?}");

    for d in [&kept.manifest_digest, &kept.config, &kept.layer, &index] {
        assert!(store.has_blob(d), "{d} was reachable");
    }
    assert!(store.has_layer_dir(&kept.diff_id));
    for d in [
        &gone.manifest_digest,
        &gone.config,
        &gone.layer,
        &orphan_blob,
    ] {
        assert!(!store.has_blob(d), "{d} was unreachable");
    }
    assert!(!store.has_layer_dir(&gone.diff_id));
    assert!(!store.has_layer_dir(&orphan_layer));
    assert!(!stale_tmp.exists());
    assert!(store.cache_get("uses-kept").unwrap().is_some());
    assert!(store.cache_get("uses-gone").unwrap().is_none());

    // Nothing left to collect; then the cache option empties the cache only.
    let again = store.prune(PruneOptions::default()).unwrap();
    assert_eq!(again, Default::default());
    let all = store.prune(PruneOptions::default().cache(true)).unwrap();
    assert_eq!(all.cache_entries, 1);
    assert_eq!(all.blobs, 0);
    assert!(store.cache_get("uses-kept").unwrap().is_none());
    assert!(store.resolve(&kept_ref).unwrap().is_some());
}

#[test]
fn prune_waits_for_running_builds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let orphan = store
        .put_blob(b"written by a build, not yet tagged")
        .unwrap();
    let build = store.lock_shared().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let report = store.prune(PruneOptions::default()).unwrap();
            tx.send(report).unwrap();
        });
        // While the build holds its shared lock, prune must not run, and tagging still works.
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        assert!(store.has_blob(&orphan));
        let r: Reference = "during-build".parse().unwrap();
        // Not a manifest: prune marks such a descriptor without following it.
        let desc = Descriptor::new(MediaType::from("application/vnd.example.data"), 34, &orphan);
        store.tag(&r, desc).unwrap();
        drop(build);
        let report = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        // Tagged before prune could mark, so it survives.
        assert_eq!(report.blobs, 0);
        assert!(store.has_blob(&orphan));
    });
}

/// Entry point for the child processes of `concurrent_processes_lose_no_tag`; a no-op when run
/// as a normal test.
#[test]
fn child_tagger() {
    let (Ok(root), Ok(prefix)) = (
        std::env::var("RBUILD_STORE_TEST_ROOT"),
        std::env::var("RBUILD_STORE_TEST_PREFIX"),
    ) else {
        return;
    };
    let store = Store::open(Path::new(&root)).unwrap();
    let blob = store.put_blob(b"{}").unwrap();
    for i in 0..40 {
        let r: Reference = format!("{prefix}:v{i}").parse().unwrap();
        store
            .tag(&r, Descriptor::new(MediaType::ImageManifest, 2, &blob))
            .unwrap();
    }
}

#[test]
fn concurrent_processes_lose_no_tag() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["one", "two", "three"]
        .iter()
        .map(|prefix| {
            Command::new(&exe)
                .args(["--exact", "child_tagger", "--nocapture"])
                .env("RBUILD_STORE_TEST_ROOT", dir.path())
                .env("RBUILD_STORE_TEST_PREFIX", prefix)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let store = Store::open(dir.path()).unwrap();
    let images = store.images().unwrap();
    assert_eq!(images.len(), 120);
    for prefix in ["one", "two", "three"] {
        let r: Reference = format!("{prefix}:v39").parse().unwrap();
        assert!(store.resolve(&r).unwrap().is_some(), "{r} lost");
    }
}

/// The whole life of a RUN layer with the real kernel overlay: a committed layer dir as
/// lowerdir, a staging upper/work pair, a file added and one deleted, the upper committed as a
/// new layer (whiteout included), and prune removing it again, including overlay's own
/// `work/work` directory (mode 000).
#[test]
fn staging_serves_as_overlay_upper_and_commits_with_whiteouts() {
    if !nix_is_root() {
        println!("skipping: kernel overlay needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let base = write_image(&store, &[("old", "to be deleted"), ("keep", "kept")]);
    let lower = store.layer_dir(&base.diff_id);
    let staging = store.staging().unwrap();
    let merged = dir.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let script = format!(
        "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off {} \
         && echo new > {m}/new && rm {m}/old && cat {m}/keep",
        lower.display(),
        staging.upper().display(),
        staging.work().display(),
        merged.display(),
        m = merged.display(),
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("permission denied") || err.contains("not supported"),
            "overlay failed unexpectedly: {err}"
        );
        println!("skipping: overlay unavailable here: {err}");
        return;
    }
    assert_eq!(String::from_utf8_lossy(&out.stdout), "kept");
    let whiteout = fs::symlink_metadata(staging.upper().join("old")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &whiteout.file_type()
    ));
    // overlayfs leaves work/work with mode 000: the staging drop must still clean it.
    let staging_path = staging.path().to_owned();
    let diff_id = Digest::sha256_of(b"pretend diff of the RUN step");
    let layer = store.commit_layer_dir(staging, &diff_id).unwrap();
    assert!(!staging_path.exists());
    assert_eq!(fs::read_to_string(layer.join("new")).unwrap(), "new\n");

    let report = store.prune(PruneOptions::default()).unwrap();
    assert!(report.layer_dirs >= 1);
    assert!(!store.has_layer_dir(&diff_id));
    assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
}
