//! The builder: Dockerfile → stages → planned steps → cached or executed → image in the store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use rbuild_oci::{Digest, Reference};
use rbuild_store::Store;

use crate::cancel::{CancelOnDrop, CancelToken};
use crate::config::Platform;
use crate::error::{Error, Result};
use crate::events::BuildEvent;
use crate::executor::{Executor, SandboxExecutor};
use crate::image;
use crate::options::{BuildOptions, DockerfileSource, ImageFormat};
use crate::stage::{Build, KeyLocks, StageResult};
use rbuild_oci::Events;

/// The result of a build.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// Manifest digest of the image.
    pub digest: Digest,
    /// Tags given to it.
    pub tags: Vec<Reference>,
    /// Steps taken from the cache / steps in the built stages.
    pub cached_steps: usize,
    /// Steps in the built stages.
    pub total_steps: usize,
    /// Each platform built, with its image's manifest digest (one entry for a single-platform
    /// build, where it is [`BuildOutput::digest`]; more for an index).
    pub platforms: Vec<(Platform, Digest)>,
}

/// Builds images into a store. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use rbuild::{BuildOptions, Builder, BuildEvent, Store};
///
/// let store = Store::open("/var/lib/rbuild".as_ref())?;
/// let builder = Builder::new(store).progress(|e: BuildEvent| eprintln!("{e:?}"));
/// let out = builder
///     .build(BuildOptions::new("./app").tag("localhost/app:1".parse()?))
///     .await?;
/// println!("{}", out.digest);
/// # Ok(()) }
/// ```
///
/// With a test executor (no RUN process, no privileges needed), a build is an ordinary function
/// call — the shape of an embedder's own tests:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use rbuild::executor::{FnExecutor, RunOutcome};
/// use rbuild::{BuildOptions, Builder, Store};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(&dir.path().join("store"))?;
/// let exec = FnExecutor::new(|step, upper| {
///     std::fs::write(upper.join("built-by"), step.args.join(" "))?;
///     Ok(RunOutcome::exited(0))
/// });
/// let builder = Builder::new(store).executor(exec.clone());
/// let opts = BuildOptions::new(dir.path())
///     .dockerfile_text("Dockerfile", "FROM scratch\nRUN make all\n")
///     .tag("localhost/app:test".parse()?);
/// let rt = tokio::runtime::Runtime::new()?;
/// let first = rt.block_on(builder.build(opts.clone()))?;
/// let second = rt.block_on(builder.build(opts))?;
/// assert_eq!(first.digest, second.digest);
/// assert_eq!(exec.runs(), 1, "the second build is served from the cache");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Builder {
    store: Arc<Store>,
    progress: Events<BuildEvent>,
    registry: Option<Arc<rbuild_registry::Client>>,
    executor: Arc<dyn Executor>,
    runtime: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("store", &self.store.root())
            .field("executor", &self.executor)
            .field("registry", &self.registry.is_some())
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// A builder over `store`, reporting nothing.
    pub fn new(store: Store) -> Self {
        Self {
            store: Arc::new(store),
            progress: Events::none(),
            registry: None,
            executor: Arc::new(SandboxExecutor),
            runtime: None,
        }
    }

    /// Runs RUN steps with `executor` instead of the default [`SandboxExecutor`].
    ///
    /// ```
    /// use rbuild::executor::{FnExecutor, RunOutcome};
    /// # fn demo(store: rbuild::Store) {
    /// let builder = rbuild::Builder::new(store)
    ///     .executor(FnExecutor::new(|_step, _upper| Ok(RunOutcome::exited(0))));
    /// # }
    /// ```
    #[must_use]
    pub fn executor(mut self, executor: impl Executor + 'static) -> Self {
        self.executor = Arc::new(executor);
        self
    }

    /// The tokio runtime that [`Builder::build_blocking`] uses for registry requests and
    /// downloads ([`Builder::build`] uses the runtime it is awaited on).
    #[must_use]
    pub fn runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Reports progress to `progress`.
    #[must_use]
    pub fn progress(mut self, progress: impl Fn(BuildEvent) + Send + Sync + 'static) -> Self {
        self.progress = Events::new(progress);
        self
    }

    /// Pulls `FROM` images that are not in the store through `client` (without one, a missing
    /// base image is an error).
    #[must_use]
    pub fn registry(mut self, client: rbuild_registry::Client) -> Self {
        self.registry = Some(Arc::new(client));
        self
    }

    /// The store images are built into.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Builds an image. Runs the blocking work (walking the context, RUN steps, compression) on
    /// tokio's blocking pool.
    ///
    /// # Errors
    ///
    /// [`Error::Dockerfile`] for an invalid Dockerfile (with file:line), [`Error::RunFailed`] for
    /// a RUN step that exits non-zero, others for store, sandbox and IO failures. On error no tag
    /// is created or moved; steps that completed stay cached.
    ///
    /// Dropping the returned future cancels the build (as [`BuildOptions::cancel_token`] would):
    /// a running RUN step's processes are killed and the blocking work stops at the next step.
    pub async fn build(&self, opts: BuildOptions) -> Result<BuildOutput> {
        let mut this = self.clone();
        this.runtime = Some(tokio::runtime::Handle::current());
        let token = opts.cancel.clone().unwrap_or_default();
        let mut guard = CancelOnDrop(Some(token.clone()));
        let result = tokio::task::spawn_blocking(move || this.solve(&opts, token)).await;
        guard.0 = None;
        match result {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Cancelled),
        }
    }

    /// Builds an image on the calling thread.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn build_blocking(&self, opts: &BuildOptions) -> Result<BuildOutput> {
        self.solve(opts, opts.cancel.clone().unwrap_or_default())
    }

    fn solve(&self, opts: &BuildOptions, cancel: CancelToken) -> Result<BuildOutput> {
        let _lock = self
            .store
            .lock_shared()
            .map_err(Error::op("lock the store"))?;
        crate::image::claim_layer_format(&self.store)?;
        let (file, text) = read_dockerfile(opts)?;
        let df = rbuild_dockerfile::parse(&text).map_err(|e| Error::Dockerfile {
            file: file.clone(),
            line: e.line(),
            column: e.column(),
            message: crate::error::dockerfile_message(&e),
        })?;
        for w in &df.warnings {
            self.progress.emit(BuildEvent::Warning(format!(
                "{file}:{}: {}",
                w.line, w.message
            )));
        }
        if df.stages.is_empty() {
            return Err(Error::Dockerfile {
                file,
                line: 1,
                column: None,
                message: "the Dockerfile has no FROM instruction".to_owned(),
            });
        }
        let target = match &opts.target {
            None => df.stages.len() - 1,
            Some(t) => df
                .stages
                .iter()
                .position(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(t)))
                .ok_or_else(|| Error::Dockerfile {
                    file: file.clone(),
                    line: 1,
                    column: None,
                    message: format!("target stage `{t}` could not be found"),
                })?,
        };
        let platforms = if opts.platforms.is_empty() {
            vec![Platform::host()]
        } else {
            opts.platforms.clone()
        };
        if let Some(p) = platforms.iter().find(|p| p.os != "linux") {
            return Err(Error::invalid(
                format!("build for {p}"),
                "only linux images can be built",
            ));
        }
        // One token for the platforms of this build: the first one to fail stops the others.
        let shared = CancelToken::new();
        let forward = shared.clone();
        let _linked = cancel.on_cancel(move || forward.cancel());
        let inflight = Arc::new(KeyLocks::default());
        let mut runs = Vec::with_capacity(platforms.len());
        for p in &platforms {
            let mut run = Build::new(
                &self.store,
                &self.progress,
                opts,
                file.clone(),
                df.clone(),
                target,
            );
            run.registry = self.registry.as_deref();
            run.executor = &*self.executor;
            run.cancel = shared.clone();
            run.rt = self.runtime.clone();
            run.inflight = inflight.clone();
            run.set_platform(p.clone());
            run.resolve_meta_args()?;
            runs.push(run);
        }
        // Bad platforms, missing emulators and base images without the platform are reported
        // before any step runs.
        for run in &runs {
            run.preflight(target)?;
        }
        let results: Vec<Result<StageResult>> = if let [run] = runs.as_slice() {
            vec![run.stage(target)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = runs
                    .iter()
                    .map(|run| {
                        let shared = &shared;
                        s.spawn(move || {
                            let r = run.stage(target);
                            if r.is_err() {
                                shared.cancel();
                            }
                            r
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(Error::invalid("build a platform", "its thread panicked"))
                        })
                    })
                    .collect()
            })
        };
        for run in &runs {
            run.save_state();
        }
        let mut built = Vec::with_capacity(results.len());
        let mut first_err = None;
        for r in results {
            match r {
                Ok(r) => built.push(r),
                // A platform stopped because another failed reports that one's error.
                Err(Error::Cancelled) if !cancel.is_cancelled() => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if built.len() != runs.len() {
            return Err(Error::Cancelled);
        }
        if let Some(repo) = &opts.cache_to {
            let client = self.registry.as_deref().ok_or_else(|| {
                Error::invalid(
                    format!("export the build cache to {}", repo.name()),
                    "no registry client configured",
                )
            })?;
            let handle = self.runtime.as_ref().ok_or_else(|| {
                Error::invalid(
                    format!("export the build cache to {}", repo.name()),
                    "no tokio runtime (build with Builder::build, or give the builder one)",
                )
            })?;
            let mut steps = Vec::new();
            for run in &runs {
                for (key, record) in run.exported.lock().map(|e| e.clone()).unwrap_or_default() {
                    if !steps.iter().any(|(k, _)| *k == key) {
                        steps.push((key, record));
                    }
                }
            }
            crate::remote_cache::export(handle, client, &self.store, repo, &steps)?;
        }
        let mut manifests = Vec::with_capacity(built.len());
        let mut warned = false;
        for (result, platform) in built.into_iter().zip(&platforms) {
            let mut config = result.config;
            if config.architecture.is_empty() {
                config.architecture = platform.architecture.clone();
                config.os = platform.os.clone();
                config.variant = platform.variant.clone();
            }
            if !opts.labels.is_empty() {
                let labels = config.config.labels.get_or_insert_with(BTreeMap::new);
                labels.extend(opts.labels.clone());
            }
            if opts.format == ImageFormat::Oci
                && config.config.extra.remove("Healthcheck").is_some()
                && !std::mem::replace(&mut warned, true)
            {
                // buildah does the same: the OCI config has no such field.
                self.progress.emit(BuildEvent::Warning(
                    "HEALTHCHECK is not supported for OCI image format and will be ignored; use --format docker".to_owned(),
                ));
            }
            let desc = image::write(
                &self.store,
                &config,
                &result.layers,
                &opts.annotations,
                opts.format,
            )?;
            let digest =
                Digest::try_from(desc.digest()).map_err(Error::op("read the manifest digest"))?;
            // The index entry names the platform the image's config says (a target stage
            // `FROM --platform=…` is that platform's image, as BuildKit records it).
            let named = Platform {
                os: config.os.clone(),
                architecture: config.architecture.clone(),
                variant: config.variant.clone(),
            };
            manifests.push((desc, named, digest));
        }
        let desc = match manifests.as_slice() {
            [(desc, _, _)] => desc.clone(),
            _ => {
                let entries: Vec<_> = manifests
                    .iter()
                    .map(|(d, p, _)| (d.clone(), p.clone()))
                    .collect();
                image::write_index(&self.store, &entries, &BTreeMap::new(), opts.format)?
            }
        };
        let digest: Digest =
            Digest::try_from(desc.digest()).map_err(Error::op("read the manifest digest"))?;
        for tag in &opts.tags {
            self.store
                .tag(tag, desc.clone())
                .map_err(Error::op(format!("tag the image as {tag}")))?;
        }
        self.progress.emit(BuildEvent::ImageWritten {
            digest: digest.clone(),
            tags: opts.tags.iter().map(ToString::to_string).collect(),
        });
        let count = |f: fn(&Build<'_>) -> usize| runs.iter().map(f).sum::<usize>();
        Ok(BuildOutput {
            digest,
            tags: opts.tags.clone(),
            cached_steps: count(|r| r.cached.load(std::sync::atomic::Ordering::Relaxed)),
            total_steps: count(|r| r.total.load(std::sync::atomic::Ordering::Relaxed)),
            platforms: manifests
                .into_iter()
                .zip(platforms)
                .map(|((_, _, d), p)| (p, d))
                .collect(),
        })
    }
}

fn read_dockerfile(opts: &BuildOptions) -> Result<(String, String)> {
    let path: PathBuf = match &opts.dockerfile {
        DockerfileSource::Text { name, text } => return Ok((name.clone(), text.clone())),
        DockerfileSource::Default => opts.context.join("Dockerfile"),
        DockerfileSource::Path(p) => p.clone(),
    };
    let read = || -> std::io::Result<String> {
        if !matches!(opts.dockerfile, DockerfileSource::Default) {
            return std::fs::read_to_string(&path);
        }
        // CONTEXT/Dockerfile comes from the build input: resolved inside the context, so a
        // `Dockerfile` that is a symlink can name another file of the context but never one
        // outside it.
        use std::io::Read as _;
        let root = crate::rootfs::open_root(&opts.context)?;
        let fd = rustix::fs::openat2(
            &root,
            "Dockerfile",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
            rustix::fs::ResolveFlags::IN_ROOT | rustix::fs::ResolveFlags::NO_MAGICLINKS,
        )?;
        let mut text = String::new();
        std::fs::File::from(fd).read_to_string(&mut text)?;
        Ok(text)
    };
    let text = read().map_err(|source| Error::ReadDockerfile {
        path: path.clone(),
        source,
    })?;
    let name = match &opts.dockerfile {
        DockerfileSource::Default => "Dockerfile".to_owned(),
        _ => path.display().to_string(),
    };
    Ok((name, text))
}
