//! What to build and how.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rbuild_oci::{Platform, Reference};

use crate::cancel::CancelToken;

/// Where the Dockerfile comes from.
#[derive(Debug, Clone)]
pub enum DockerfileSource {
    /// `CONTEXT/Dockerfile`.
    Default,
    /// A file path (relative paths are taken from the current directory, like docker's `-f`).
    Path(PathBuf),
    /// Dockerfile text given directly, with a name for messages.
    Text {
        /// Shown in error messages in place of a file name.
        name: String,
        /// The Dockerfile.
        text: String,
    },
}

/// Options of one build. Built with chained setters:
///
/// ```
/// use rbuild::BuildOptions;
///
/// let opts = BuildOptions::new("./app")
///     .tag("localhost/app:1".parse().unwrap())
///     .build_arg("VERSION", "1.2.3")
///     .no_cache(false);
/// assert_eq!(opts.tags().len(), 1);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildOptions {
    /// The build context directory.
    pub(crate) context: PathBuf,
    /// The Dockerfile.
    pub(crate) dockerfile: DockerfileSource,
    /// Tags for the result.
    pub(crate) tags: Vec<Reference>,
    /// `--build-arg` values.
    pub(crate) build_args: BTreeMap<String, String>,
    /// Ignore the step cache.
    pub(crate) no_cache: bool,
    /// The stage to build (default: the last one).
    pub(crate) target: Option<String>,
    /// `SOURCE_DATE_EPOCH`: image and history times, and clamp of file times in new layers.
    pub(crate) source_date_epoch: Option<i64>,
    /// Labels added to the image config.
    pub(crate) labels: BTreeMap<String, String>,
    /// Report why each step missed the cache ([`crate::BuildEvent::CacheMiss`]).
    pub(crate) explain: bool,
    /// Stages whose steps ignore the cache (`--no-cache-filter`).
    pub(crate) no_cache_filter: Vec<String>,
    /// Build secrets by id (`--secret id=x,src=FILE|env=VAR`).
    pub(crate) secrets: BTreeMap<String, SecretSource>,
    /// Layer compression.
    pub(crate) compression: rbuild_layer::Compression,
    /// Layer compression level (`None`: the compression's default).
    pub(crate) compression_level: Option<i32>,
    /// Manifest annotations.
    pub(crate) annotations: BTreeMap<String, String>,
    /// Target platforms (empty: the host's). More than one builds an image index.
    pub(crate) platforms: Vec<Platform>,
    /// Image format: OCI (default) or Docker v2 schema 2.
    pub(crate) format: ImageFormat,
    /// Registry repositories to look step results up in (`--cache-from`).
    pub(crate) cache_from: Vec<Reference>,
    /// Registry repository to push step results to (`--cache-to`).
    pub(crate) cache_to: Option<Reference>,
    /// The network of RUN steps without `--network` (`--network none|host`).
    pub(crate) network: rbuild_sandbox::Network,
    /// Memory, process and `ulimit` limits of every RUN step (`--memory`, `--pids-limit`,
    /// `--ulimit`).
    pub(crate) limits: rbuild_sandbox::Limits,
    /// `--userns=auto`: RUN steps as root of a user namespace on these host ids.
    pub(crate) user_namespace: Option<rbuild_sandbox::userns::IdShift>,
    /// Honour `RUN --security=insecure` (`--allow security.insecure`, BuildKit's entitlement);
    /// without it such a step is an error.
    pub(crate) allow_insecure: bool,
    /// How `ADD <url>` fetches: size cap, TLS verification.
    pub(crate) download: crate::download::DownloadOptions,
    /// Cancels the build when it fires.
    pub(crate) cancel: Option<CancelToken>,
}

/// Where a build secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file on the host.
    File(PathBuf),
    /// An environment variable of the build process.
    Env(String),
}

impl SecretSource {
    /// Reads the secret's value.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or the variable is not set.
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::File(p) => std::fs::read(p),
            Self::Env(v) => std::env::var_os(v)
                .map(|s| s.into_encoded_bytes())
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("environment variable {v} is not set"),
                    )
                }),
        }
    }
}

/// The manifest and config media types written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImageFormat {
    /// OCI image manifest and config.
    #[default]
    Oci,
    /// Docker image manifest v2 schema 2 (keeps HEALTHCHECK, SHELL, ONBUILD as docker reads them).
    Docker,
}

impl BuildOptions {
    /// Options for building `context` with its `Dockerfile`.
    pub fn new(context: impl Into<PathBuf>) -> Self {
        Self {
            context: context.into(),
            dockerfile: DockerfileSource::Default,
            tags: Vec::new(),
            build_args: BTreeMap::new(),
            no_cache: false,
            target: None,
            source_date_epoch: None,
            labels: BTreeMap::new(),
            explain: false,
            no_cache_filter: Vec::new(),
            secrets: BTreeMap::new(),
            compression: rbuild_layer::Compression::Gzip,
            compression_level: None,
            annotations: BTreeMap::new(),
            platforms: Vec::new(),
            format: ImageFormat::Oci,
            cache_from: Vec::new(),
            cache_to: None,
            network: rbuild_sandbox::Network::Host,
            limits: rbuild_sandbox::Limits::default(),
            user_namespace: None,
            allow_insecure: false,
            download: crate::download::DownloadOptions::default(),
            cancel: None,
        }
    }

    /// Uses the Dockerfile at `path`.
    #[must_use]
    pub fn dockerfile(mut self, path: impl Into<PathBuf>) -> Self {
        self.dockerfile = DockerfileSource::Path(path.into());
        self
    }

    /// Uses Dockerfile text given directly.
    #[must_use]
    pub fn dockerfile_text(mut self, name: impl Into<String>, text: impl Into<String>) -> Self {
        self.dockerfile = DockerfileSource::Text {
            name: name.into(),
            text: text.into(),
        };
        self
    }

    /// Adds a tag.
    #[must_use]
    pub fn tag(mut self, reference: Reference) -> Self {
        self.tags.push(reference);
        self
    }

    /// Sets a build argument.
    #[must_use]
    pub fn build_arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.build_args.insert(key.into(), value.into());
        self
    }

    /// Ignores (or not) the step cache.
    #[must_use]
    pub fn no_cache(mut self, yes: bool) -> Self {
        self.no_cache = yes;
        self
    }

    /// Builds the named stage instead of the last one.
    #[must_use]
    pub fn target(mut self, stage: impl Into<String>) -> Self {
        self.target = Some(stage.into());
        self
    }

    /// Sets `SOURCE_DATE_EPOCH`.
    #[must_use]
    pub fn source_date_epoch(mut self, epoch: i64) -> Self {
        self.source_date_epoch = Some(epoch);
        self
    }

    /// Reports why each step missed the cache.
    #[must_use]
    pub fn explain(mut self, yes: bool) -> Self {
        self.explain = yes;
        self
    }

    /// Adds a build secret.
    #[must_use]
    pub fn secret(mut self, id: impl Into<String>, source: SecretSource) -> Self {
        self.secrets.insert(id.into(), source);
        self
    }

    /// Sets the layer compression.
    #[must_use]
    pub fn compression(mut self, c: rbuild_layer::Compression) -> Self {
        self.compression = c;
        self
    }

    /// Sets the layer compression level (gzip 0–9, zstd 1–22; `None`: the default, see
    /// [`rbuild_layer::DEFAULT_GZIP_LEVEL`] and [`rbuild_layer::DEFAULT_ZSTD_LEVEL`]). The
    /// level is part of every step's cache key.
    #[must_use]
    pub fn compression_level(mut self, level: Option<i32>) -> Self {
        self.compression_level = level;
        self
    }

    /// The layer options these build options ask for.
    pub(crate) fn layer_options(&self) -> rbuild_layer::LayerOptions {
        let o = rbuild_layer::LayerOptions::default()
            .compression(self.compression)
            .source_date_epoch(self.source_date_epoch);
        match self.compression_level {
            Some(l) => o.level(l),
            None => o,
        }
    }

    /// Adds a manifest annotation.
    #[must_use]
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Builds for `platform` instead of the host's (RUN steps of a foreign architecture run
    /// through the kernel's binfmt_misc emulation).
    #[must_use]
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platforms = vec![platform];
        self
    }

    /// Builds for each of `platforms` (in parallel) and tags an image index over the results;
    /// one platform builds a single image as [`BuildOptions::platform`] does.
    #[must_use]
    pub fn platforms(mut self, platforms: impl IntoIterator<Item = Platform>) -> Self {
        self.platforms = platforms.into_iter().collect();
        self
    }

    /// Sets the image format.
    #[must_use]
    pub fn format(mut self, format: ImageFormat) -> Self {
        self.format = format;
        self
    }

    /// Ignores the cache for the named stage's steps.
    #[must_use]
    pub fn no_cache_filter(mut self, stage: impl Into<String>) -> Self {
        self.no_cache_filter.push(stage.into());
        self
    }

    /// Looks step results up in this registry repository before running them.
    #[must_use]
    pub fn cache_from(mut self, repo: Reference) -> Self {
        self.cache_from.push(repo);
        self
    }

    /// Pushes every step's result to this registry repository after the build.
    #[must_use]
    pub fn cache_to(mut self, repo: Reference) -> Self {
        self.cache_to = Some(repo);
        self
    }

    /// Sets the network of RUN steps that do not say `--network`.
    #[must_use]
    pub fn network(mut self, network: rbuild_sandbox::Network) -> Self {
        self.network = network;
        self
    }

    /// Runs every RUN step as root of a user namespace on `shift` (`--userns=auto`, for root on
    /// a shared host: a step's root is not the host's root). The image is the same as without;
    /// the cache is shared.
    #[must_use]
    pub fn user_namespace(mut self, shift: Option<rbuild_sandbox::userns::IdShift>) -> Self {
        self.user_namespace = shift;
        self
    }

    /// Sets the resource limits of every RUN step.
    #[must_use]
    pub fn limits(mut self, limits: rbuild_sandbox::Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Allows (or not) `RUN --security=insecure`.
    #[must_use]
    pub fn allow_insecure(mut self, yes: bool) -> Self {
        self.allow_insecure = yes;
        self
    }

    /// Sets how `ADD <url>` fetches (size cap, TLS verification).
    #[must_use]
    pub fn download(mut self, download: crate::download::DownloadOptions) -> Self {
        self.download = download;
        self
    }

    /// Adds a label to the image.
    #[must_use]
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Builds `context` instead of the directory given to [`BuildOptions::new`].
    #[must_use]
    pub fn context(mut self, context: impl Into<PathBuf>) -> Self {
        self.context = context.into();
        self
    }

    /// The tags the image will get.
    pub fn tags(&self) -> &[Reference] {
        &self.tags
    }

    /// The build context directory.
    pub fn context_dir(&self) -> &std::path::Path {
        &self.context
    }

    /// Stops the build when `token` fires (see [`CancelToken`]).
    #[must_use]
    pub fn cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }
}
