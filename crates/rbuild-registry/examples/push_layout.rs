//! Pushes an image from an OCI layout directory through the `rbuild-registry` API alone.
//!
//! ```text
//! cargo run -p rbuild-registry --example push_layout -- LAYOUT[:NAME] REGISTRY/REPO:TAG
//! ```
//!
//! `NAME` selects the manifest whose `org.opencontainers.image.ref.name` annotation matches;
//! without it the layout's first manifest is pushed. Prints docker's push lines.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rbuild_oci::oci_spec::image::{ImageIndex, ImageManifest};
use rbuild_oci::{Digest, Reference};
use rbuild_registry::{BlobRef, BlobSource, Client, ClientOptions, Events, ImageToPush, PushEvent};

/// Blobs of an OCI layout: `blobs/sha256/<hex>`.
struct Layout(PathBuf);

impl BlobSource for Layout {
    fn open(&self, digest: &Digest) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(
            self.0.join("blobs/sha256").join(digest.hex()),
        )?))
    }
}

fn blob_ref(d: &rbuild_oci::oci_spec::image::Descriptor) -> anyhow::Result<BlobRef> {
    Ok(BlobRef {
        digest: Digest::try_from(d.digest())?,
        size: d.size(),
        media_type: d.media_type().to_string(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [layout, target] = args.as_slice() else {
        bail!("usage: push_layout LAYOUT[:NAME] REGISTRY/REPO:TAG");
    };
    let (dir, name) = match layout.split_once(':') {
        Some((d, n)) => (PathBuf::from(d), Some(n)),
        None => (PathBuf::from(layout), None),
    };
    let target: Reference = target.parse()?;
    let index: ImageIndex = serde_json::from_slice(
        &std::fs::read(dir.join("index.json"))
            .with_context(|| format!("reading {}/index.json", dir.display()))?,
    )?;
    let entry = index
        .manifests()
        .iter()
        .find(|m| match name {
            None => true,
            Some(n) => m
                .annotations()
                .as_ref()
                .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                .is_some_and(|v| v == n),
        })
        .context("no matching manifest in index.json")?;
    let manifest_digest = Digest::try_from(entry.digest())?;
    let source = Arc::new(Layout(dir));
    let mut manifest_bytes = Vec::new();
    source
        .open(&manifest_digest)?
        .read_to_end(&mut manifest_bytes)?;
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)?;
    let image = ImageToPush {
        manifest_media_type: entry.media_type().to_string(),
        config: blob_ref(manifest.config())?,
        layers: manifest
            .layers()
            .iter()
            .map(blob_ref)
            .collect::<anyhow::Result<_>>()?,
        manifest_bytes,
        mount_from: Vec::new(),
    };
    let client = Client::new(ClientOptions::default())?;
    let result = client
        .push_image(
            &target,
            image,
            source,
            Events::new(|e: PushEvent| {
                if let Some(line) = e.docker_line() {
                    println!("{line}");
                }
            }),
        )
        .await
        .with_context(|| format!("failed to push {target}"))?;
    if result.digest != manifest_digest {
        bail!(
            "pushed {} but the layout says {manifest_digest}",
            result.digest
        );
    }
    Ok(())
}
