//! Push with all blobs present: the time and the requests of a no-op re-push.
//!
//! Starts `docker-registry` on a free loopback port, pushes an image of 5 layers of 1 MiB,
//! then pushes it again 20 times with fresh clients (no cached auth or connections) and
//! prints the median wall time and the requests the registry logged per re-push (goal: one
//! HEAD per blob plus one manifest HEAD, no upload).
//!
//! ```text
//! cargo bench -p rbuild-registry --bench repush
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rbuild_oci::{Digest, Reference, media_type};
use rbuild_registry::{
    BlobRef, BlobSource, Client, ClientOptions, CredentialsEnv, Events, ImageToPush,
};
use rbuild_testkit::registry::{Registry, RegistryOptions};

struct Blobs(Vec<(Digest, Vec<u8>)>);

impl BlobSource for Blobs {
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        let (_, b) = self
            .0
            .iter()
            .find(|(d, _)| d == digest)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such blob"))?;
        Ok(Box::new(io::Cursor::new(b.clone())))
    }
}

fn image() -> (ImageToPush, Blobs) {
    let mut blobs = Vec::new();
    let mut layers = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..5 {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let raw: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 33) as u8
            })
            .collect();
        e.write_all(&raw).expect("gzip to memory");
        let gz = e.finish().expect("gzip to memory");
        let d = Digest::sha256_of(&gz);
        layers.push(BlobRef {
            digest: d.clone(),
            size: gz.len() as u64,
            media_type: media_type::OCI_LAYER_GZIP.to_owned(),
        });
        blobs.push((d, gz));
    }
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let config_ref = BlobRef {
        digest: Digest::sha256_of(&config),
        size: config.len() as u64,
        media_type: media_type::OCI_CONFIG.to_owned(),
    };
    blobs.push((config_ref.digest.clone(), config));
    let desc = |b: &BlobRef| serde_json::json!({"mediaType": b.media_type, "digest": b.digest.to_string(), "size": b.size});
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": desc(&config_ref),
        "layers": layers.iter().map(desc).collect::<Vec<_>>(),
    });
    let image = ImageToPush {
        manifest_bytes: rbuild_oci::canonical_json(&manifest).expect("json"),
        manifest_media_type: media_type::OCI_MANIFEST.to_owned(),
        config: config_ref,
        layers,
        mount_from: Vec::new(),
    };
    (image, Blobs(blobs))
}

fn main() {
    let reg = match Registry::start(RegistryOptions::default()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("skipping: cannot start docker-registry: {e}");
            return;
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (image, blobs) = image();
    let blobs = Arc::new(blobs);
    let target: Reference = format!("{}/bench:1", reg.host())
        .parse()
        .expect("reference");
    let options = || ClientOptions::default().credentials_env(CredentialsEnv::default());
    let first = Instant::now();
    rt.block_on(async {
        let client = Client::new(options()).expect("client");
        client
            .push_image(&target, image.clone(), blobs.clone(), Events::none())
            .await
            .expect("first push");
    });
    println!("first push (5 x 1 MiB layers): {:?}", first.elapsed());

    let mut times: Vec<Duration> = Vec::new();
    let mut requests = 0;
    for _ in 0..20 {
        reg.clear_access_log();
        let start = Instant::now();
        rt.block_on(async {
            let client = Client::new(options()).expect("client");
            let r = client
                .push_image(&target, image.clone(), blobs.clone(), Events::none())
                .await
                .expect("re-push");
            assert!(!r.manifest_pushed);
        });
        times.push(start.elapsed());
        reg.settle();
        let log = reg.access_log();
        assert!(log.iter().all(|l| l.method == "HEAD"), "{log:?}");
        requests = log.len();
    }
    times.sort();
    println!(
        "no-op re-push: median {:?}, min {:?}, max {:?}; {requests} requests (6 blob HEADs + 1 manifest HEAD expected)",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
