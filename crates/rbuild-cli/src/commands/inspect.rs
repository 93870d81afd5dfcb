//! `rbuild inspect`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;

use anyhow::Context as _;
use rbuild::Digest;
use rbuild::oci::media_type;

use super::RegistryFlags;

/// Arguments of `rbuild inspect`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Image reference or manifest digest.
    reference: String,
    /// Ask the registry instead of the store (nothing is downloaded but the manifest and,
    /// for an image manifest, its config).
    #[arg(long)]
    remote: bool,
    /// Show this platform's image of a multi-platform index (without it, an index is shown
    /// as the index with its platforms).
    #[arg(long)]
    platform: Option<rbuild::Platform>,
}

/// The largest config blob `inspect --remote` reads into memory; real configs are a few KiB.
const MAX_CONFIG: u64 = 4 << 20;

/// Runs `rbuild inspect`: prints `{"digest", "manifest", "config"}` (with `--remote` also
/// `"mediaType"`; an index has no config).
pub(crate) async fn run(
    root: &Path,
    flags: &RegistryFlags,
    args: Args,
) -> anyhow::Result<ExitCode> {
    if args.remote {
        return remote(flags, &args.reference).await;
    }
    let store = super::open_store(root)?;
    let desc = rbuild::image::resolve(&store, &args.reference)?;
    let mt = desc.media_type().to_string();
    if args.platform.is_none() && media_type::is_index(&mt) {
        let digest = Digest::try_from(desc.digest())?;
        let bytes = store.read_blob(&digest)?;
        let manifest: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("the image index {digest} is not JSON"))?;
        let platforms: Vec<serde_json::Value> = rbuild::image::index_entries(&store, &digest)?
            .into_iter()
            .map(|(d, p)| {
                let child = d.digest().to_string();
                let present = child.parse::<Digest>().is_ok_and(|c| store.has_blob(&c));
                serde_json::json!({"platform": p.to_string(), "digest": child, "present": present})
            })
            .collect();
        let out = serde_json::json!({
            "digest": digest.to_string(),
            "mediaType": mt,
            "manifest": manifest,
            "platforms": platforms,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let img = super::load_image_for(&store, &args.reference, args.platform.as_ref())?;
    let out = serde_json::json!({
        "digest": img.digest.to_string(),
        "manifest": img.manifest,
        "config": img.config,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

async fn remote(flags: &RegistryFlags, reference: &str) -> anyhow::Result<ExitCode> {
    let reference = super::parse_reference(reference)?;
    let client = flags.client()?;
    let fail = || format!("failed to inspect {reference}");
    let m = client.get_manifest(&reference).await.with_context(fail)?;
    let manifest: serde_json::Value = serde_json::from_slice(&m.bytes)
        .with_context(|| format!("the manifest of {reference} is not JSON"))?;
    let mut out = serde_json::json!({
        "digest": m.digest.to_string(),
        "mediaType": m.media_type,
        "manifest": manifest,
    });
    if media_type::is_manifest(&m.media_type) {
        let config = &manifest["config"];
        let digest: Digest = config["digest"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("the manifest of {reference} has no valid config digest"))?;
        let size = config["size"].as_u64().unwrap_or(0);
        if size > MAX_CONFIG {
            anyhow::bail!("the config of {reference} is {size} bytes, more than inspect reads");
        }
        let progress = AtomicU64::new(0);
        let (bytes, _) = client
            .fetch_blob(&reference, &digest, Vec::new(), &progress)
            .await
            .with_context(fail)?;
        out["config"] = serde_json::from_slice(&bytes)
            .with_context(|| format!("the config of {reference} is not JSON"))?;
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
