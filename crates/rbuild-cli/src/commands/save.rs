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
}

/// Runs `rbuild save`.
pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let format: SaveFormat = args.format.parse()?;
    let store = super::open_store(root)?;
    let img = super::load_image(&store, &args.reference)?;
    let reference = args
        .reference
        .parse::<rbuild::Reference>()
        .ok()
        .filter(|_| !args.reference.starts_with("sha256:"));
    export::save(&store, &img, reference.as_ref(), format, &args.output)?;
    Ok(ExitCode::SUCCESS)
}
