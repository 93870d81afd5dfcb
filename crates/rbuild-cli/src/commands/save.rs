//! `rbuild save`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rbuild::export::{self, SaveFormat};

/// Arguments of `rbuild save`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Image reference or manifest digest.
    reference: String,
    /// Output path.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// `oci-dir`, `oci-archive` or `docker-archive`.
    #[arg(long, default_value = "oci-dir")]
    format: String,
    /// Save this platform's image out of a multi-platform index (without it an index is saved
    /// whole, which a docker-archive cannot hold).
    #[arg(long)]
    platform: Option<rbuild::Platform>,
}

/// Runs `rbuild save`.
pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let format: SaveFormat = args.format.parse()?;
    let store = super::open_store(root)?;
    let reference = args
        .reference
        .parse::<rbuild::Reference>()
        .ok()
        .filter(|_| !args.reference.starts_with("sha256:"));
    let desc = rbuild::image::resolve(&store, &args.reference)?;
    if args.platform.is_none() && rbuild::oci::media_type::is_index(desc.media_type().as_ref()) {
        let digest = rbuild::Digest::try_from(desc.digest())?;
        export::save_index(&store, &digest, reference.as_ref(), format, &args.output)?;
        return Ok(ExitCode::SUCCESS);
    }
    let img = super::load_image_for(&store, &args.reference, args.platform.as_ref())?;
    export::save(&store, &img, reference.as_ref(), format, &args.output)?;
    Ok(ExitCode::SUCCESS)
}
