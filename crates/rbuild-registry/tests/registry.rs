//! Conformance against the CNCF registry (`docker-registry` 2.8.2) started on a free loopback
//! port: push, second push uploads nothing, mount, pull, chunked upload, tags, delete, basic
//! auth. skopeo is the independent reader.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use common::{MemBlobs, Recorder, make_image, quiet, registry};
use rbuild_oci::Reference;
use rbuild_registry::{BlobStatus, Client, ClientOptions, Credentials, CredentialsEnv, PushEvent};
use rbuild_testkit::registry::RegistryOptions;

/// A client that reads no real config file.
fn options() -> ClientOptions {
    ClientOptions::default().credentials_env(CredentialsEnv::default())
}

fn reference(host: &str, repo_tag: &str) -> Reference {
    format!("{host}/{repo_tag}").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_is_read_by_skopeo_and_second_push_uploads_nothing() {
    let Some(reg) = registry(RegistryOptions::default()) else {
        return;
    };
    let (image, blobs) = make_image(1, 3, 50_000);
    let target = reference(&reg.host(), "app:v1");
    let client = Client::new(options()).unwrap();
    let rec = Recorder::default();
    let first = client
        .push_image(&target, image.clone(), Arc::new(blobs.clone()), rec.sink())
        .await
        .unwrap();
    assert!(first.manifest_pushed);
    assert!(first.blobs.iter().all(|(_, s)| *s == BlobStatus::Pushed));
    let lines: Vec<String> = rec
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(PushEvent::docker_line)
        .collect();
    assert_eq!(
        lines.last().unwrap(),
        &format!(
            "v1: digest: {} size: {}",
            first.digest,
            image.manifest_bytes.len()
        )
    );
    assert_eq!(
        lines.iter().filter(|l| l.ends_with(": Pushed")).count(),
        3,
        "{lines:?}"
    );
    // Every uploaded layer reports its bytes, ending at its size.
    let events = rec.events.lock().unwrap().clone();
    for layer in &image.layers {
        let last = events
            .iter()
            .filter_map(|e| match e {
                PushEvent::Progress {
                    digest,
                    done,
                    total,
                } if *digest == layer.digest => Some((*done, *total)),
                _ => None,
            })
            .next_back();
        assert_eq!(last, Some((layer.size, layer.size)));
    }

    // Independent reader: skopeo sees our digest.
    match Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{target}"),
        ])
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["Digest"], first.digest.to_string());
            assert_eq!(v["Layers"].as_array().unwrap().len(), 3);
        }
        Err(e) => eprintln!("skopeo check skipped: {e}"),
    }

    // Second push, fresh client: one HEAD per blob + one manifest HEAD, nothing uploaded.
    reg.clear_access_log();
    let client = Client::new(options()).unwrap();
    let rec = Recorder::default();
    let start = Instant::now();
    let second = client
        .push_image(&target, image.clone(), Arc::new(blobs.clone()), rec.sink())
        .await
        .unwrap();
    eprintln!("no-op re-push took {:?}", start.elapsed());
    assert_eq!(second.digest, first.digest);
    assert!(!second.manifest_pushed);
    let lines: Vec<String> = rec
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(PushEvent::docker_line)
        .collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.ends_with(": Layer already exists"))
            .count(),
        3,
        "{lines:?}"
    );
    reg.settle();
    let log = reg.access_log();
    let methods: Vec<&str> = log.iter().map(|l| l.method.as_str()).collect();
    assert_eq!(methods, vec!["HEAD"; 5], "{log:?}");
    assert!(
        log.iter()
            .filter(|l| l.path.contains("/manifests/"))
            .count()
            == 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_pull_tags_and_delete() {
    let Some(reg) = registry(RegistryOptions::default()) else {
        return;
    };
    let (mut image, blobs) = make_image(2, 2, 20_000);
    let client = Client::new(options()).unwrap();
    let base = reference(&reg.host(), "base/img:1");
    client
        .push_image(&base, image.clone(), Arc::new(blobs.clone()), quiet())
        .await
        .unwrap();

    // Cross-repository mount: no blob bytes travel.
    reg.clear_access_log();
    image.mount_from = vec![base.clone()];
    let app = reference(&reg.host(), "app:1");
    let rec = Recorder::default();
    let pushed = client
        .push_image(&app, image.clone(), Arc::new(blobs.clone()), rec.sink())
        .await
        .unwrap();
    assert!(
        pushed
            .blobs
            .iter()
            .all(|(_, s)| *s == BlobStatus::MountedFrom("base/img".into()))
    );
    let lines: Vec<String> = rec
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(PushEvent::docker_line)
        .collect();
    assert!(
        lines.iter().any(|l| l.ends_with(": Mounted from base/img")),
        "{lines:?}"
    );
    reg.settle();
    let log = reg.access_log();
    assert!(log.iter().all(|l| l.method != "PATCH"), "{log:?}");
    assert_eq!(
        log.iter()
            .filter(|l| l.method == "POST" && l.path.contains("mount=") && l.status == 201)
            .count(),
        3
    );

    // Pull back into an empty sink: same manifest digest, same blob bytes.
    let sink = MemBlobs::default();
    let pulled = client
        .pull_image(&app, None, Arc::new(sink.clone()), quiet())
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest, pushed.digest);
    assert_eq!(pulled.manifest.bytes, image.manifest_bytes);
    assert_eq!(sink.len(), 3);
    for b in std::iter::once(&image.config).chain(&image.layers) {
        assert_eq!(sink.get(&b.digest), blobs.get(&b.digest));
    }
    // A second pull fetches no blob.
    reg.clear_access_log();
    client
        .pull_image(&app, None, Arc::new(sink.clone()), quiet())
        .await
        .unwrap();
    reg.settle();
    assert!(reg.access_log().iter().all(|l| !l.path.contains("/blobs/")));

    // Tags: 2.8.2 does not paginate tag lists and returns them unsorted.
    for t in ["a", "b", "c"] {
        client
            .put_manifest(
                &app.with_tag(t),
                &image.manifest_bytes,
                &image.manifest_media_type,
            )
            .await
            .unwrap();
    }
    let mut tags = client.tags(&app, Some(2)).await.unwrap();
    tags.sort();
    assert_eq!(tags, ["1", "a", "b", "c"]);
    let mut repos = client.catalog(&reg.host(), None).await.unwrap();
    repos.sort();
    assert_eq!(repos, ["app", "base/img"]);

    // Delete by tag (resolved to the digest); then the tag is gone.
    assert_eq!(client.resolve_digest(&app).await.unwrap(), pushed.digest);
    let deleted = client.delete_manifest(&app).await.unwrap();
    assert_eq!(deleted, pushed.digest);
    let err = client.resolve_digest(&app).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(
        err.to_string().contains(&format!("{}/app", reg.host())),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_sends_content_range_patches() {
    let Some(reg) = registry(RegistryOptions::default()) else {
        return;
    };
    let (image, blobs) = make_image(3, 1, 300_000);
    let client = Client::new(options().chunk_size(Some(64 * 1024))).unwrap();
    let target = reference(&reg.host(), "chunked:1");
    let result = client
        .push_image(&target, image.clone(), Arc::new(blobs.clone()), quiet())
        .await
        .unwrap();
    reg.settle();
    let patches = reg
        .access_log()
        .iter()
        .filter(|l| l.method == "PATCH")
        .count();
    // 300 kB of noise gzips to a bit more than 300 kB: at least 5 chunks of 64 KiB.
    assert!(patches >= 5, "{patches} PATCH requests");
    let sink = MemBlobs::default();
    let pulled = client
        .pull_image(&target, None, Arc::new(sink.clone()), quiet())
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest, result.digest);
    assert_eq!(
        sink.get(&image.layers[0].digest),
        blobs.get(&image.layers[0].digest)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_right_and_wrong_password() {
    let Some(reg) = registry(RegistryOptions::default().htpasswd("alice", "s3cret-pw")) else {
        return;
    };
    let (image, blobs) = make_image(4, 1, 1000);
    let target = reference(&reg.host(), "private:1");

    // Anonymous: unauthorized, with the login hint.
    let anon = Client::new(options()).unwrap();
    let err = anon
        .push_image(&target, image.clone(), Arc::new(blobs.clone()), quiet())
        .await
        .unwrap_err();
    assert!(err.is_unauthorized(), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("push to {}/private: unauthorized", reg.host())),
        "{err}"
    );

    // Wrong password: a clear error that never shows the password.
    let wrong = Client::new(
        options().credentials(&reg.host(), Credentials::password("alice", "not-it-pw")),
    )
    .unwrap();
    let err = wrong.ping(&reg.host()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("unauthorized") && msg.contains("wrong username or password?"),
        "{msg}"
    );
    assert!(!msg.contains("not-it-pw") && !format!("{err:?}").contains("not-it-pw"));

    // `login` verifies before anything is written.
    let err = anon
        .login(&reg.host(), Credentials::password("alice", "not-it-pw"))
        .await
        .unwrap_err();
    assert!(
        err.is_unauthorized() && !err.to_string().contains("not-it-pw"),
        "{err}"
    );
    anon.login(&reg.host(), Credentials::password("alice", "s3cret-pw"))
        .await
        .unwrap();

    // Right password from a docker config.json written like `login` does.
    let home = tempfile::tempdir().unwrap();
    let env = CredentialsEnv {
        docker_config: Some(home.path().to_owned()),
        ..CredentialsEnv::default()
    };
    env.store(&reg.host(), "alice", "s3cret-pw").unwrap();
    let client = Client::new(ClientOptions::default().credentials_env(env)).unwrap();
    client.ping(&reg.host()).await.unwrap();
    let pushed = client
        .push_image(&target, image.clone(), Arc::new(blobs.clone()), quiet())
        .await
        .unwrap();
    let sink = MemBlobs::default();
    let pulled = client
        .pull_image(&target, None, Arc::new(sink.clone()), quiet())
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest, pushed.digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copied_image_pulls_with_the_same_digest() {
    let Some(reg) = registry(RegistryOptions::default()) else {
        return;
    };
    if Command::new("skopeo").arg("--version").output().is_err() {
        eprintln!("skipping: skopeo not installed");
        return;
    }
    // Write an OCI layout by hand, let skopeo copy it into the registry, pull it with us.
    let (image, blobs) = make_image(5, 2, 10_000);
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path();
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    for (d, b) in blobs.blobs.lock().unwrap().iter() {
        std::fs::write(layout.join("blobs/sha256").join(d.hex()), b).unwrap();
    }
    let md = rbuild_oci::Digest::sha256_of(&image.manifest_bytes);
    std::fs::write(
        layout.join("blobs/sha256").join(md.hex()),
        &image.manifest_bytes,
    )
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": image.manifest_media_type, "digest": md.to_string(),
        "size": image.manifest_bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "x"}}]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let target = reference(&reg.host(), "copied:1");
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:x", layout.display()))
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = Client::new(options()).unwrap();
    let sink = MemBlobs::default();
    let pulled = client
        .pull_image(&target, None, Arc::new(sink.clone()), quiet())
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest, md);
    assert_eq!(sink.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_resolves_to_the_requested_platform() {
    let Some(reg) = registry(RegistryOptions::default()) else {
        return;
    };
    let client = Client::new(options()).unwrap();
    let repo = reference(&reg.host(), "multi:x");
    let mut entries = Vec::new();
    let mut pushed = Vec::new();
    for (seed, arch) in [(20, "amd64"), (21, "arm64")] {
        let (image, blobs) = make_image(seed, 1, 3000);
        let r = client
            .push_image(
                &repo.with_tag(arch),
                image.clone(),
                Arc::new(blobs.clone()),
                quiet(),
            )
            .await
            .unwrap();
        entries.push(serde_json::json!({
            "mediaType": image.manifest_media_type,
            "digest": r.digest.to_string(),
            "size": r.size,
            "platform": {"os": "linux", "architecture": arch},
        }));
        pushed.push((r.digest, image, blobs));
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": rbuild_oci::media_type::OCI_INDEX,
        "manifests": entries,
    });
    let index_bytes = rbuild_oci::canonical_json(&index).unwrap();
    let multi = repo.with_tag("multi");
    let index_digest = client
        .put_manifest(&multi, &index_bytes, rbuild_oci::media_type::OCI_INDEX)
        .await
        .unwrap();
    assert_eq!(client.resolve_digest(&multi).await.unwrap(), index_digest);

    let sink = MemBlobs::default();
    let arm: rbuild_registry::Platform = "linux/arm64".parse().unwrap();
    let pulled = client
        .pull_image(&multi, Some(&arm), Arc::new(sink.clone()), quiet())
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest, pushed[1].0);
    assert_eq!(
        pulled.index.as_ref().map(|m| &m.digest),
        Some(&index_digest)
    );
    assert_eq!(pulled.layers[0].digest, pushed[1].1.layers[0].digest);
    assert!(
        sink.get(&pushed[0].1.layers[0].digest).is_none(),
        "the other platform was not fetched"
    );

    let s390: rbuild_registry::Platform = "linux/s390x".parse().unwrap();
    let err = client
        .pull_image(&multi, Some(&s390), Arc::new(sink.clone()), quiet())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("has no manifest for linux/s390x (it has: linux/amd64, linux/arm64)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_v2s2_manifest_pushed_by_skopeo_pulls() {
    let Some(reg) = registry(RegistryOptions::default()) else {
        return;
    };
    let (image, blobs) = make_image(22, 1, 2000);
    let client = Client::new(options()).unwrap();
    let oci = reference(&reg.host(), "conv:oci");
    client
        .push_image(&oci, image.clone(), Arc::new(blobs.clone()), quiet())
        .await
        .unwrap();
    let v2 = reference(&reg.host(), "conv:v2s2");
    let out = match Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "-f",
            "v2s2",
        ])
        .arg(format!("docker://{oci}"))
        .arg(format!("docker://{v2}"))
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipping: skopeo not runnable: {e}");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = client.get_manifest(&v2).await.unwrap();
    assert_eq!(m.media_type, rbuild_oci::media_type::DOCKER_MANIFEST);
    let sink = MemBlobs::default();
    let pulled = client
        .pull_image(&v2, None, Arc::new(sink.clone()), quiet())
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest, m.digest);
    assert_eq!(
        sink.get(&image.layers[0].digest),
        blobs.get(&image.layers[0].digest)
    );
}
