//! Hostile inputs that come from outside the build context: a `--cache-from` record whose
//! layer lies about its diff_id, and an `ADD <url>` body larger than the cap. Each plants a
//! marker and checks it reached neither the store's layers nor the built image.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use rbuild_registry::{BlobRef, BlobSource, Client, ClientOptions, ImageToPush};
use rbuild_testkit::registry::{Registry, RegistryOptions};

use crate::support::*;

const MARKER: &str = "EVIL-LAYER-MARKER-52c1";

/// Blobs served from memory for a push.
struct Blobs(HashMap<rbuild::Digest, Vec<u8>>);

impl BlobSource for Blobs {
    fn open(&self, digest: &rbuild::Digest) -> std::io::Result<Box<dyn Read + Send>> {
        self.0
            .get(digest)
            .map(|b| Box::new(std::io::Cursor::new(b.clone())) as Box<dyn Read + Send>)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
}

/// Regular files below `dir` (symlinks not followed) that contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file()
                && std::fs::read(&p)
                    .unwrap()
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes())
            {
                hits.push(p);
            }
        }
    }
    hits
}

#[test]
fn a_cache_from_record_whose_diff_id_lies_plants_nothing() {
    if !can_build() || !have_tool("docker-registry") {
        return;
    }
    let registry = Registry::start(RegistryOptions::default()).expect("start docker-registry");
    let repo = format!("{}/buildcache", registry.host());
    let work = tempfile::tempdir().unwrap();
    let ctx = context_with(work.path(), "ctx", "FROM scratch\nCOPY a.txt /a.txt\n");
    std::fs::write(ctx.join("a.txt"), "honest\n").unwrap();
    let build = |root: &Path, flag: &str| {
        rbuild(
            root,
            &[
                "build",
                "--progress",
                "plain",
                "--source-date-epoch",
                "1700000000",
                flag,
                &repo,
                "-t",
                "localhost/victim:1",
                ctx.to_str().unwrap(),
            ],
        )
    };
    ok(&build(&work.path().join("first"), "--cache-to"));

    // An attacker with push access to the cache repository swaps each entry's layer for one of
    // its own, keeping the honest diff_id so the record still names the honest layer dir.
    let evil_dir = work.path().join("evil");
    std::fs::create_dir_all(evil_dir.join("usr/bin")).unwrap();
    std::fs::write(evil_dir.join("a.txt"), MARKER).unwrap();
    std::fs::write(evil_dir.join("usr/bin/backdoor"), MARKER).unwrap();
    let (evil_blob, evil) = rbuild::layer::write_layer(
        &evil_dir,
        Vec::new(),
        &rbuild::layer::LayerOptions::default(),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(ClientOptions::default()).unwrap();
    let repo_ref: rbuild::Reference = repo.parse().unwrap();
    let mut claimed = Vec::new();
    rt.block_on(async {
        let tags = client.tags(&repo_ref, None).await.unwrap();
        assert!(!tags.is_empty(), "--cache-to pushed no entry");
        for tag in tags {
            let r = repo_ref.with_tag(&tag);
            let m = client.get_manifest(&r).await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
            let cfg: rbuild::Digest = v["config"]["digest"].as_str().unwrap().parse().unwrap();
            let progress = std::sync::atomic::AtomicU64::new(0);
            let (bytes, _) = client
                .fetch_blob(&repo_ref, &cfg, Vec::new(), &progress)
                .await
                .unwrap();
            let mut record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            if record["layer"].is_null() {
                continue;
            }
            claimed.push(record["layer"]["diff_id"].as_str().unwrap().to_owned());
            record["layer"]["digest"] = evil.digest.to_string().into();
            record["layer"]["size"] = evil.size.into();
            record["layer"]["media_type"] = evil.media_type.into();
            let config = serde_json::to_vec(&record).unwrap();
            let config_ref = BlobRef {
                digest: rbuild::Digest::sha256_of(&config),
                size: config.len() as u64,
                media_type: v["config"]["mediaType"].as_str().unwrap().to_owned(),
            };
            let layer_ref = BlobRef {
                digest: evil.digest.clone(),
                size: evil.size,
                media_type: evil.media_type.to_owned(),
            };
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": rbuild::oci::media_type::OCI_MANIFEST,
                "config": {"mediaType": config_ref.media_type, "digest": config_ref.digest.to_string(), "size": config_ref.size},
                "layers": [{"mediaType": layer_ref.media_type, "digest": layer_ref.digest.to_string(), "size": layer_ref.size}],
            });
            let blobs = Blobs(HashMap::from([
                (config_ref.digest.clone(), config.clone()),
                (evil.digest.clone(), evil_blob.clone()),
            ]));
            let img = ImageToPush {
                manifest_bytes: serde_json::to_vec(&manifest).unwrap(),
                manifest_media_type: rbuild::oci::media_type::OCI_MANIFEST.to_owned(),
                config: config_ref,
                layers: vec![layer_ref],
                mount_from: Vec::new(),
            };
            client
                .push_image(
                    &r,
                    img,
                    std::sync::Arc::new(blobs),
                    rbuild::registry::Events::none(),
                )
                .await
                .unwrap();
        }
    });
    assert!(!claimed.is_empty(), "no cache entry had a layer");

    // A second store builds with the tampered cache: the entry is refused, the step runs.
    let second = work.path().join("second");
    let o = build(&second, "--cache-from");
    let out = ok(&o);
    let err = stderr(&o);
    assert!(
        format!("{out}{err}").contains(&format!("unpack layer {}", evil.digest)),
        "the refusal names the layer:\n{out}\n{err}"
    );
    for d in &claimed {
        let hex = d.trim_start_matches("sha256:");
        let dir = second.join("layers").join(hex);
        assert_eq!(
            std::fs::read_to_string(dir.join("a.txt")).unwrap(),
            "honest\n"
        );
        assert!(!dir.join("usr").exists());
    }
    for sub in ["layers", "tmp", "cache"] {
        assert_eq!(
            files_containing(&second.join(sub), MARKER),
            Vec::<std::path::PathBuf>::new(),
            "{sub}"
        );
    }
}

#[test]
fn an_add_url_over_the_size_cap_fails_and_leaves_nothing() {
    // A server that sends an endless body with no Content-Length.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).is_ok_and(|n| n == 1) {
                head.push(b[0]);
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![b'z'; 64 * 1024];
            for _ in 0..4096 {
                if s.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
    });
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ctx = context_with(
        work.path(),
        "ctx",
        &format!("FROM scratch\nADD http://127.0.0.1:{port}/big.bin /big.bin\n"),
    );
    let o = rbuild(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "--add-max-bytes",
            "100000",
            ctx.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(
        err.contains(&format!("ADD http://127.0.0.1:{port}/big.bin")),
        "{err}"
    );
    assert!(
        err.contains("larger than the limit of 100000 bytes"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
