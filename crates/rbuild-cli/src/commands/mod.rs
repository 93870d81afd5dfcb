//! One module per subcommand.

pub(crate) mod build;
pub(crate) mod check;
pub(crate) mod deploy;
pub(crate) mod executor;
pub(crate) mod history;
pub(crate) mod images;
pub(crate) mod info;
pub(crate) mod inspect;
pub(crate) mod login;
pub(crate) mod logout;
pub(crate) mod ls;
pub(crate) mod parse;
pub(crate) mod pipeline;
pub(crate) mod prune;
pub(crate) mod pull;
pub(crate) mod push;
pub(crate) mod registry;
pub(crate) mod rmi;
pub(crate) mod rollback;
pub(crate) mod run;
pub(crate) mod save;
pub(crate) mod tag;
pub(crate) mod unshare;

use std::path::Path;

use anyhow::Context as _;
use rbuild::Store;
use rbuild::registry::{Client, ClientOptions};

/// Opens (creating if needed) the store at `root`.
pub(crate) fn open_store(root: &Path) -> anyhow::Result<Store> {
    Store::open(root).with_context(|| format!("failed to open the store at {}", root.display()))
}

/// Resolves and loads an image by reference or digest.
pub(crate) fn load_image(
    store: &Store,
    reference: &str,
) -> anyhow::Result<rbuild::image::LoadedImage> {
    load_image_for(store, reference, None)
}

/// Resolves and loads an image by reference or digest; from an image index, the manifest for
/// `platform` (default: this machine's).
pub(crate) fn load_image_for(
    store: &Store,
    reference: &str,
    platform: Option<&rbuild::Platform>,
) -> anyhow::Result<rbuild::image::LoadedImage> {
    let desc = rbuild::image::resolve_for(store, reference, platform)?;
    let digest = rbuild::Digest::try_from(desc.digest())?;
    Ok(rbuild::image::load(store, &digest)?)
}

/// How to reach registries: global flags of every command that talks to one.
///
/// Loopback registries (`localhost`, `127.0.0.0/8`, `::1`) are spoken to over plain HTTP
/// without any flag, as docker does; other plain-HTTP registries need `--insecure-registry`
/// (docker's daemon option of the same name).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RegistryFlags {
    /// Verify registries' TLS certificates (`--tls-verify=false` to accept any, as podman).
    #[arg(
        long,
        global = true,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub tls_verify: bool,
    /// Speak plain HTTP to this registry `host[:port]` (repeatable).
    #[arg(long = "insecure-registry", global = true, value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

impl RegistryFlags {
    /// A registry client with these settings and the credentials of the environment
    /// (`$DOCKER_CONFIG`, `$REGISTRY_AUTH_FILE`, `~/.docker/config.json`).
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(self.options())?)
    }

    /// The client options these flags describe.
    pub(crate) fn options(&self) -> ClientOptions {
        let mut o = ClientOptions::default().tls_verify(self.tls_verify);
        for h in &self.insecure_registries {
            o = o.insecure_registry(h);
        }
        o
    }
}

/// Parses an image reference given on the command line.
pub(crate) fn parse_reference(s: &str) -> anyhow::Result<rbuild::Reference> {
    s.parse()
        .with_context(|| format!("invalid image reference `{s}`"))
}
