//! `rbuild run`: a process in an image's root filesystem, the image config applied, the
//! changes thrown away afterwards.

use rbuild_sandbox::{Network, RunSpec, Stdio};
use rbuild_store::Store;

use crate::error::{Error, Result};
use crate::image::{self, LoadedImage};

/// How to run a container.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replaces the image's CMD when not empty.
    pub command: Vec<String>,
    /// Replaces the image's ENTRYPOINT when set.
    pub entrypoint: Option<Vec<String>>,
    /// Extra `KEY=value` environment, after the image's.
    pub env: Vec<String>,
    /// Overrides the image's USER.
    pub user: Option<String>,
    /// Disables networking.
    pub no_network: bool,
}

/// The argv docker would run: ENTRYPOINT + (command or CMD).
pub fn argv(img: &LoadedImage, opts: &RunOptions) -> Vec<String> {
    let mut args = opts
        .entrypoint
        .clone()
        .or_else(|| img.config.config.entrypoint.clone())
        .unwrap_or_default();
    if opts.command.is_empty() {
        args.extend(img.config.config.cmd.clone().unwrap_or_default());
    } else {
        args.extend(opts.command.iter().cloned());
    }
    args
}

/// Runs a container of `img` with our stdin/stdout/stderr and returns its exit status
/// (128+N when killed by signal N).
///
/// # Errors
///
/// [`Error::Executor`] when the machine cannot run it, an error naming the operation when the
/// image has no command or a layer cannot be prepared.
pub fn run(store: &Store, img: &LoadedImage, opts: &RunOptions) -> Result<i32> {
    let args = argv(img, opts);
    if args.is_empty() {
        return Err(Error::invalid(
            format!("run {}", img.digest),
            "no command given and the image has neither ENTRYPOINT nor CMD",
        ));
    }
    rbuild_sandbox::check_support()
        .map_err(|e| Error::Executor(crate::executor::ExecutorError::Unavailable(e.into())))?;
    let _lock = store.lock_shared().map_err(Error::op("lock the store"))?;
    image::claim_layer_format(store)?;
    let view = image::ensure_unpacked(store, &img.layers)?;
    let staging = store
        .staging()
        .map_err(Error::op("prepare the container's upper directory"))?;
    let mut env = img.config.config.env.clone().unwrap_or_default();
    env.extend(opts.env.iter().cloned());
    let spec = RunSpec {
        lower_dirs: view.dirs().to_vec(),
        upper_dir: staging.upper(),
        work_dir: staging.work(),
        args,
        env,
        cwd: img
            .config
            .config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_owned()),
        user: opts
            .user
            .clone()
            .or_else(|| img.config.config.user.clone())
            .filter(|u| !u.is_empty()),
        network: if opts.no_network {
            Network::None
        } else {
            Network::Host
        },
        hostname: img.digest.short().to_owned(),
        stdio: Stdio::Inherit,
        ..RunSpec::default()
    };
    let outcome =
        rbuild_sandbox::run(&spec, &mut |_| {}).map_err(Error::op("run the container"))?;
    Ok(outcome.status)
}
