//! One module per subcommand.

pub mod build;
pub mod images;
pub mod inspect;
pub mod parse;
pub mod prune;
pub mod rmi;
pub mod run;
pub mod save;

use std::path::Path;

use anyhow::Context as _;
use rbuild::Store;

/// Opens (creating if needed) the store at `root`.
pub fn open_store(root: &Path) -> anyhow::Result<Store> {
    Store::open(root).with_context(|| format!("failed to open the store at {}", root.display()))
}

/// Resolves and loads an image by reference or digest.
pub fn load_image(store: &Store, reference: &str) -> anyhow::Result<rbuild::image::LoadedImage> {
    let desc = rbuild::image::resolve(store, reference)?;
    let digest = rbuild::Digest::try_from(desc.digest())?;
    Ok(rbuild::image::load(store, &digest)?)
}
