//! `rbuild rmi`.

use std::path::Path;
use std::process::ExitCode;

/// Arguments of `rbuild rmi`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image references to untag.
    #[arg(required = true)]
    references: Vec<String>,
}

/// Runs `rbuild rmi`: removes the tags; `rbuild prune` frees the space.
pub fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let store = super::open_store(root)?;
    let mut code = ExitCode::SUCCESS;
    for r in &args.references {
        let reference: rbuild::Reference = r.parse()?;
        if store.untag(&reference)? {
            println!("Untagged: {reference}");
        } else {
            eprintln!("error: no such image: {reference}");
            code = ExitCode::FAILURE;
        }
    }
    Ok(code)
}
