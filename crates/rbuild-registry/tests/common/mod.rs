//! Shared helpers of the registry tests: a generated image, in-memory blob source and sink,
//! and the registry fixture (skipping when the binary is missing).

#![allow(dead_code)] // reason: each test binary uses a different subset of the helpers

pub(crate) mod fake;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use rbuild_oci::{Digest, media_type};
use rbuild_registry::{BlobRef, BlobSink, BlobSource, BlobWriter, Events, ImageToPush};
use rbuild_testkit::registry::{Registry, RegistryOptions};

/// Starts the real registry, or `None` (with the reason printed) when it is not installed.
pub(crate) fn registry(options: RegistryOptions) -> Option<Registry> {
    match Registry::start(options) {
        Ok(r) => Some(r),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("skipping: docker-registry (or htpasswd) is not installed: {e}");
            None
        }
        Err(e) => panic!("registry did not start: {e}"),
    }
}

/// Deterministic bytes that do not compress (an LCG), `len` long.
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Blobs by digest, in memory.
#[derive(Default, Clone)]
pub(crate) struct MemBlobs {
    pub blobs: Arc<Mutex<HashMap<Digest, Vec<u8>>>>,
}

impl MemBlobs {
    pub(crate) fn insert(&self, bytes: Vec<u8>) -> Digest {
        let d = Digest::sha256_of(&bytes);
        self.blobs.lock().unwrap().insert(d.clone(), bytes);
        d
    }

    pub(crate) fn get(&self, d: &Digest) -> Option<Vec<u8>> {
        self.blobs.lock().unwrap().get(d).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.blobs.lock().unwrap().len()
    }
}

impl BlobSource for MemBlobs {
    fn open(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        let bytes = self
            .get(digest)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no blob {digest}")))?;
        Ok(Box::new(io::Cursor::new(bytes)))
    }
}

struct MemWriter {
    digest: Digest,
    buf: Vec<u8>,
    blobs: MemBlobs,
}

impl Write for MemWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWriter for MemWriter {
    fn commit(self: Box<Self>) -> io::Result<()> {
        self.blobs
            .blobs
            .lock()
            .unwrap()
            .insert(self.digest, self.buf);
        Ok(())
    }
}

impl BlobSink for MemBlobs {
    fn has(&self, digest: &Digest) -> bool {
        self.blobs.lock().unwrap().contains_key(digest)
    }
    fn write(&self, digest: &Digest) -> io::Result<Box<dyn BlobWriter>> {
        Ok(Box::new(MemWriter {
            digest: digest.clone(),
            buf: Vec::new(),
            blobs: self.clone(),
        }))
    }
}

/// A small OCI image: `layers` gzip layers of `layer_size` uncompressible bytes each, a config
/// with their diff ids, and the manifest. Returns the image and the blobs.
pub(crate) fn make_image(seed: u64, layers: usize, layer_size: usize) -> (ImageToPush, MemBlobs) {
    let blobs = MemBlobs::default();
    let mut layer_refs = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..layers {
        let raw = noise(seed * 100 + i as u64, layer_size);
        diff_ids.push(Digest::sha256_of(&raw).to_string());
        let gz = gzip(&raw);
        let size = gz.len() as u64;
        let digest = blobs.insert(gz);
        layer_refs.push(BlobRef {
            digest,
            size,
            media_type: media_type::OCI_LAYER_GZIP.to_owned(),
        });
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": [format!("SEED={seed}")]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_bytes = rbuild_oci::canonical_json(&config).unwrap();
    let config_ref = BlobRef {
        size: config_bytes.len() as u64,
        digest: blobs.insert(config_bytes),
        media_type: media_type::OCI_CONFIG.to_owned(),
    };
    let desc = |b: &BlobRef| serde_json::json!({"mediaType": b.media_type, "digest": b.digest.to_string(), "size": b.size});
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": desc(&config_ref),
        "layers": layer_refs.iter().map(desc).collect::<Vec<_>>(),
    });
    let image = ImageToPush {
        manifest_bytes: rbuild_oci::canonical_json(&manifest).unwrap(),
        manifest_media_type: media_type::OCI_MANIFEST.to_owned(),
        config: config_ref,
        layers: layer_refs,
        mount_from: Vec::new(),
    };
    (image, blobs)
}

/// A sink that drops every event.
pub(crate) fn quiet<E>() -> Events<E> {
    Events::none()
}

/// Collects events.
pub(crate) struct Recorder<E> {
    pub events: Arc<Mutex<Vec<E>>>,
}

impl<E> Default for Recorder<E> {
    fn default() -> Self {
        Self {
            events: Arc::default(),
        }
    }
}

impl<E: Send + 'static> Recorder<E> {
    /// A sink that records into this recorder.
    pub(crate) fn sink(&self) -> Events<E> {
        let events = Arc::clone(&self.events);
        Events::new(move |e| events.lock().unwrap().push(e))
    }
}
