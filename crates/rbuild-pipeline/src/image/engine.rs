//! Every call into the rbuild engine that the image executor makes, in one place: the engine's
//! API is the part of this crate most likely to move.

use std::path::{Path, PathBuf};

use rbuild::sandbox::{BindMount, RunSpec, Stdio};

use super::{Error, LineSplitter, RegistryOptions};
use crate::run::{JobOutput, Stream};

/// The parts of an image a session needs.
pub(super) struct Loaded {
    /// The config's `Env` (`K=V`).
    pub env: Vec<String>,
    user: Option<String>,
    hostname: String,
    layers: Vec<rbuild::image::LayerRecord>,
}

/// One script run in a fresh container.
pub(super) struct Session {
    pub job: String,
    pub image: String,
    pub script: String,
    pub env: Vec<String>,
    /// The job's directory on the host.
    pub workdir: PathBuf,
    /// Where it is mounted in the container (`CI_PROJECT_DIR`), also the working directory.
    pub project_dir: String,
}

pub(super) fn open_store(root: &Path) -> Result<rbuild::Store, Error> {
    rbuild::Store::open(root).map_err(|e| Error::OpenStore {
        root: root.to_owned(),
        source: e.into(),
    })
}

pub(super) fn has_image(store: &rbuild::Store, image: &str) -> bool {
    rbuild::image::resolve(store, image).is_ok()
}

pub(super) async fn pull(
    store: &rbuild::Store,
    registries: &RegistryOptions,
    image: &str,
) -> Result<(), Error> {
    let reference: rbuild::Reference = image.parse().map_err(|e| Error::ParseReference {
        reference: image.to_owned(),
        source: Box::new(e),
    })?;
    let mut options = rbuild::registry::ClientOptions::default().tls_verify(registries.tls_verify);
    for h in &registries.insecure_registries {
        options = options.insecure_registry(h);
    }
    let client = rbuild::registry::Client::new(options)
        .map_err(|e| Error::CreateClient { source: e.into() })?;
    rbuild::registry::pull(
        store,
        &client,
        &reference,
        None,
        rbuild::registry::Events::none(),
    )
    .await
    .map_err(|e| Error::PullImage {
        reference: reference.to_string(),
        source: e.into(),
    })?;
    Ok(())
}

pub(super) fn load(store: &rbuild::Store, image: &str) -> Result<Loaded, Error> {
    let load_error = |source: rbuild::BoxError| Error::LoadImage {
        reference: image.to_owned(),
        source,
    };
    let desc = rbuild::image::resolve_for(store, image, None).map_err(|e| load_error(e.into()))?;
    let digest = rbuild::Digest::try_from(desc.digest()).map_err(|e| load_error(e.into()))?;
    let img = rbuild::image::load(store, &digest).map_err(|e| load_error(e.into()))?;
    Ok(Loaded {
        env: img.config.config.env.clone().unwrap_or_default(),
        user: img.config.config.user.clone().filter(|u| !u.is_empty()),
        hostname: img.digest.short().to_owned(),
        layers: img.layers.clone(),
    })
}

pub(super) fn check_sandbox() -> Result<(), Error> {
    rbuild::sandbox::check_support().map_err(|e| Error::SandboxUnsupported { source: e.into() })
}

/// Cancels the container when dropped: a job future dropped by `timeout:` or Ctrl-C stops the
/// container's whole process tree instead of leaving it running.
struct StopOnDrop(Option<rbuild::sandbox::CancelHandle>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.cancel();
        }
    }
}

/// Runs `session` and returns the script's exit status; output lines go to `out` as stdout.
/// Dropping the returned future (a job `timeout:`, Ctrl-C) kills the container.
pub(super) async fn run_session(
    store: &rbuild::Store,
    image: Loaded,
    session: Session,
    out: JobOutput,
) -> Result<i32, Error> {
    let store = store.clone();
    let job = session.job.clone();
    let cancel = rbuild::sandbox::CancelHandle::new();
    let mut stop = StopOnDrop(Some(cancel.clone()));
    let result = tokio::task::spawn_blocking(move || -> Result<i32, Error> {
        let prepare = |action: &'static str| {
            let reference = session.image.clone();
            move |e: rbuild::BoxError| Error::PrepareContainer {
                reference,
                action,
                source: e,
            }
        };
        let _lock = store
            .lock_shared()
            .map_err(|e| prepare("lock the store")(e.into()))?;
        let lower_dirs = rbuild::image::unpacked_dirs(&store, &image.layers)
            .map_err(|e| prepare("unpack the layers")(e.into()))?;
        let staging = store
            .staging()
            .map_err(|e| prepare("prepare the container's upper directory")(e.into()))?;
        let spec = RunSpec {
            lower_dirs,
            upper_dir: staging.upper(),
            work_dir: staging.work(),
            args: vec!["sh".into(), "-e".into(), "-c".into(), session.script],
            env: session.env,
            cwd: session.project_dir.clone(),
            user: image.user,
            hostname: image.hostname,
            stdio: Stdio::Capture,
            extra_mounts: vec![BindMount {
                source: session.workdir,
                target: session.project_dir,
                readonly: false,
            }],
            ..RunSpec::default()
        };
        let mut lines = LineSplitter::default();
        let outcome = rbuild::sandbox::run_cancellable(&spec, &cancel, &mut |chunk| {
            lines.push(chunk, |l| out.line(Stream::Stdout, l));
        })
        .map_err(|e| Error::RunContainer {
            job: session.job.clone(),
            source: e.into(),
        })?;
        lines.finish(|l| out.line(Stream::Stdout, l));
        Ok(outcome.status)
    })
    .await;
    stop.0 = None;
    result.map_err(|source| Error::Task {
        job,
        task: "container",
        source,
    })?
}
