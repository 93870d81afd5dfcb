//! `rbuild build`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::ValueEnum;
use rbuild::{BuildOptions, Builder, Reference};

use super::RegistryFlags;
use crate::progress::{Mode, Renderer};

/// Arguments of `rbuild build`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Name and tag of the image (repeatable).
    #[arg(short = 't', long = "tag", value_name = "REF")]
    tags: Vec<String>,
    /// The Dockerfile [default: CONTEXT/Dockerfile].
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// A build argument (repeatable).
    #[arg(long = "build-arg", value_name = "K=V")]
    build_args: Vec<String>,
    /// Do not use the step cache.
    #[arg(long)]
    no_cache: bool,
    /// Say why each step that is not cached missed the cache.
    #[arg(long)]
    explain: bool,
    /// Build this stage instead of the last.
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Progress output: `auto` (live display on a terminal) or `plain` (lines).
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
    /// Set image and history times to this Unix time and clamp file times in new layers.
    #[arg(long, value_name = "SECONDS", env = "SOURCE_DATE_EPOCH")]
    source_date_epoch: Option<i64>,
    /// A label for the image (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    /// After the build, push every `-t` tag to its registry.
    #[arg(long, requires = "tags")]
    push: bool,
    /// Write the image's manifest digest (`sha256:…`, no newline) to this file, as kaniko
    /// does; with `--push` only after every push succeeded.
    #[arg(long, value_name = "FILE")]
    pub(crate) digest_file: Option<PathBuf>,
    /// A build secret for `RUN --mount=type=secret` (repeatable): `id=ID,src=FILE` or `id=ID,env=VAR`.
    #[arg(long = "secret", value_name = "SPEC")]
    secrets: Vec<String>,
    /// Layer compression: `gzip` or `zstd`.
    #[arg(long, default_value = "gzip")]
    compression: String,
    /// Layer compression level: gzip 0–9 (default 6, Go's and so docker's and buildah's),
    /// zstd 1–22 (default 3). Part of every step's cache key.
    #[arg(long = "compression-level", value_name = "N")]
    compression_level: Option<i32>,
    /// An annotation on the image manifest (repeatable).
    #[arg(long = "annotation", value_name = "K=V")]
    annotations: Vec<String>,
    /// Target platforms, comma-separated (`linux/amd64,linux/arm64`): more than one builds an
    /// image index. A foreign architecture's RUN steps need QEMU registered with binfmt_misc.
    #[arg(long, value_name = "OS/ARCH[/VARIANT],…")]
    platform: Option<String>,
    /// Image format: `oci` or `docker` (docker keeps HEALTHCHECK).
    #[arg(long, default_value = "oci")]
    format: String,
    /// Look step results up in this registry repository (repeatable).
    #[arg(long = "cache-from", value_name = "REPO")]
    cache_from: Vec<String>,
    /// Push every step's result to this registry repository.
    #[arg(long = "cache-to", value_name = "REPO")]
    cache_to: Option<String>,
    /// Ignore the cache for this stage's steps (repeatable).
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    no_cache_filter: Vec<String>,
    /// Memory limit of each RUN step, swap included (`512m`, `2g`; a cgroup limit).
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Most processes and threads at once in each RUN step (a cgroup limit).
    #[arg(long = "pids-limit", value_name = "N")]
    pids_limit: Option<u64>,
    /// A resource limit of each RUN step, `NAME=SOFT[:HARD]` like `nofile=1024:2048` (repeatable).
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    ulimits: Vec<String>,
    /// The network of RUN steps without `--network`: `host` (default) or `none`.
    #[arg(long, value_name = "MODE")]
    network: Option<String>,
    /// Grant an entitlement: `security.insecure` lets `RUN --security=insecure` run with every
    /// capability and no seccomp filter (repeatable).
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    allow: Vec<String>,
    /// User namespace of RUN steps: `host` (default: the builder's own ids) or `auto` (as root:
    /// a user namespace on root's /etc/subuid and /etc/subgid range, so a step's root is not
    /// the host's root; same image).
    #[arg(long, value_name = "MODE")]
    userns: Option<String>,
    /// Largest body an `ADD <url>` may download, in bytes (default 1 GiB).
    #[arg(long = "add-max-bytes", value_name = "BYTES")]
    add_max_bytes: Option<u64>,
    /// Where RUN steps cannot have namespaces (an unprivileged container), rbuild builds in the
    /// container's own `/`: leave this path alone there (repeatable; the store, the context,
    /// rbuild's own directory and every mount point are kept anyway).
    #[arg(long = "ignore-path", value_name = "PATH")]
    pub(crate) ignore_paths: Vec<PathBuf>,
    /// Allow that in-place build outside a container (it deletes everything else under `/`).
    #[arg(long)]
    pub(crate) force: bool,
    /// The build context directory, or `-` for a tar archive on stdin (then `-f` names a file in it).
    context: PathBuf,
}

/// `--memory`, `--pids-limit`, `--ulimit`, `--userns`, `--network`, `--allow`.
fn sandbox_options(mut opts: BuildOptions, args: &Args) -> anyhow::Result<BuildOptions> {
    let mut limits = rbuild::sandbox::Limits::default();
    if let Some(m) = &args.memory {
        limits.memory = Some(rbuild::sandbox::parse_size(m).context("invalid --memory")?);
    }
    if let Some(n) = args.pids_limit {
        anyhow::ensure!(n > 0, "invalid --pids-limit 0: must be at least 1");
        limits.pids = Some(n);
    }
    for u in &args.ulimits {
        limits.ulimits.push(u.parse().context("invalid --ulimit")?);
    }
    opts = opts.limits(limits);
    match args.userns.as_deref() {
        None | Some("host") => {}
        Some("auto") => {
            use rbuild::sandbox::userns::{self, IdShift, Mode};
            let mode = userns::detect();
            anyhow::ensure!(
                mode == Mode::Rootful,
                "--userns=auto is for root on the host; this build is already {} (its steps \
                 run in a user namespace)",
                mode.name()
            );
            opts = opts.user_namespace(Some(IdShift::for_root()?));
        }
        Some(other) => anyhow::bail!("unknown --userns `{other}` (expected host or auto)"),
    }
    if let Some(n) = &args.network {
        opts = opts.network(match n.as_str() {
            "host" | "default" => rbuild::sandbox::Network::Host,
            "none" => rbuild::sandbox::Network::None,
            other => anyhow::bail!("unknown --network `{other}` (expected host or none)"),
        });
    }
    for a in &args.allow {
        match a.as_str() {
            "security.insecure" => opts = opts.allow_insecure(true),
            // The host network is already the default for RUN steps.
            "network.host" => {}
            other => anyhow::bail!(
                "unknown --allow `{other}` (expected security.insecure or network.host)"
            ),
        }
    }
    Ok(opts)
}

/// Root that cannot make namespaces (an unprivileged container: no CAP_SYS_ADMIN, the
/// runtime's seccomp profile) builds in place, keeping the store, the context, this binary's
/// directory and `--ignore-path`s; everywhere else the sandbox runs the steps.
fn in_place_executor(
    root: &Path,
    opts: &BuildOptions,
    args: &Args,
) -> anyhow::Result<Option<rbuild::executor::InPlaceExecutor>> {
    let rootful = rbuild::sandbox::userns::detect() == rbuild::sandbox::userns::Mode::Rootful;
    if !rootful || rbuild::sandbox::check_support().is_ok() {
        return Ok(None);
    }
    // OVERLAYFS_SUPER_MAGIC: overlayfs refuses to create whiteouts (0/0 character devices),
    // which layer directories hold.
    if nix::sys::statfs::statfs(root)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC)
    {
        anyhow::bail!(
            "this container cannot make namespaces, so rbuild builds in place, and its store {} \
             is on the container's overlay filesystem, which cannot hold the layers' whiteouts: \
             mount a volume there (an emptyDir in Kubernetes, `-v` with docker; rbuild's executor \
             image declares VOLUME /rbuild/store)",
            root.display()
        );
    }
    let mut keep = vec![root.to_owned(), opts.context_dir().to_owned()];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        // The binary's own directory, unless it is a system one that the image replaces.
        if ![
            "/",
            "/bin",
            "/usr/bin",
            "/usr/local/bin",
            "/sbin",
            "/usr/sbin",
        ]
        .iter()
        .any(|d| dir == Path::new(d))
        {
            keep.push(dir);
        }
    }
    if let Ok(c) = std::env::var("DOCKER_CONFIG") {
        keep.push(c.into());
    }
    keep.extend(args.ignore_paths.iter().cloned());
    let keep = keep
        .into_iter()
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
        .collect();
    Ok(Some(rbuild::executor::InPlaceExecutor::new(
        keep,
        &rbuild::executor::ContainerMarkers::read(),
        args.force,
    )))
}

/// `--secret id=ID,src=FILE|env=VAR` (docker buildx's syntax; `source=` and `type=` accepted).
fn secret(spec: &str) -> anyhow::Result<(String, rbuild::SecretSource)> {
    let (mut id, mut src, mut env) = (None, None, None);
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_owned()),
            Some(("src" | "source", v)) => src = Some(v.to_owned()),
            Some(("env", v)) => env = Some(v.to_owned()),
            Some(("type", "file" | "env")) => {}
            _ => {
                anyhow::bail!("invalid --secret `{spec}`: expected id=ID,src=FILE or id=ID,env=VAR")
            }
        }
    }
    let id = id.ok_or_else(|| anyhow::anyhow!("invalid --secret `{spec}`: missing id="))?;
    let source = match (src, env) {
        (Some(f), _) => rbuild::SecretSource::File(f.into()),
        (None, Some(v)) => rbuild::SecretSource::Env(v),
        // buildx: without src or env, the variable named like the id.
        (None, None) => rbuild::SecretSource::Env(id.clone()),
    };
    Ok((id, source))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProgressArg {
    Auto,
    Plain,
}

fn key_value(s: &str, what: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        // docker: `--build-arg NAME` takes the value from the environment.
        None if what == "--build-arg" && !s.is_empty() => {
            Ok((s.to_owned(), std::env::var(s).unwrap_or_default()))
        }
        _ => anyhow::bail!("invalid {what} `{s}`: expected KEY=VALUE"),
    }
}

/// Runs `rbuild build`.
pub(crate) async fn run(
    root: &Path,
    flags: &RegistryFlags,
    args: Args,
) -> anyhow::Result<ExitCode> {
    let mut opts = BuildOptions::new(&args.context)
        .no_cache(args.no_cache)
        .explain(args.explain);
    if let Some(f) = &args.file {
        opts = opts.dockerfile(f);
    }
    for t in &args.tags {
        let r: Reference = t.parse().with_context(|| format!("invalid tag `{t}`"))?;
        opts = opts.tag(r);
    }
    for b in &args.build_args {
        let (k, v) = key_value(b, "--build-arg")?;
        opts = opts.build_arg(k, v);
    }
    for l in &args.labels {
        let (k, v) = key_value(l, "--label")?;
        opts = opts.label(k, v);
    }
    if let Some(t) = &args.target {
        opts = opts.target(t);
    }
    if let Some(e) = args.source_date_epoch {
        opts = opts.source_date_epoch(e);
    }
    for spec in &args.secrets {
        let (id, source) = secret(spec)?;
        opts = opts.secret(id, source);
    }
    for a in &args.annotations {
        let (k, v) = key_value(a, "--annotation")?;
        opts = opts.annotation(k, v);
    }
    for r in &args.cache_from {
        let repo: Reference = r
            .parse()
            .with_context(|| format!("invalid --cache-from `{r}`"))?;
        opts = opts.cache_from(repo);
    }
    if let Some(r) = &args.cache_to {
        let repo: Reference = r
            .parse()
            .with_context(|| format!("invalid --cache-to `{r}`"))?;
        opts = opts.cache_to(repo);
    }
    for f in &args.no_cache_filter {
        opts = opts.no_cache_filter(f);
    }
    opts = sandbox_options(opts, &args)?;
    opts = opts.compression(match args.compression.as_str() {
        "gzip" => rbuild::layer::Compression::Gzip,
        "zstd" => rbuild::layer::Compression::Zstd,
        other => anyhow::bail!("unknown --compression `{other}` (expected gzip or zstd)"),
    });
    if let Some(level) = args.compression_level {
        let range = if args.compression == "zstd" {
            1..=22
        } else {
            0..=9
        };
        anyhow::ensure!(
            range.contains(&level),
            "invalid --compression-level {level}: {} takes {} to {}",
            args.compression,
            range.start(),
            range.end()
        );
        opts = opts.compression_level(Some(level));
    }
    opts = opts.format(match args.format.as_str() {
        "oci" => rbuild::ImageFormat::Oci,
        "docker" => rbuild::ImageFormat::Docker,
        other => anyhow::bail!("unknown --format `{other}` (expected oci or docker)"),
    });
    if let Some(p) = &args.platform {
        opts = opts.platforms(
            rbuild::Platform::parse_list(p).with_context(|| format!("invalid --platform `{p}`"))?,
        );
    }
    // ADD URLs follow the registry client's `--tls-verify`.
    let mut download = rbuild::DownloadOptions::default().tls_verify(flags.tls_verify);
    if let Some(n) = args.add_max_bytes {
        download = download.max_bytes(n);
    }
    opts = opts.download(download);
    // `-f -`: the Dockerfile from stdin; `-` as context: a tar of the context on stdin.
    let _stdin_context;
    if args.context.as_os_str() == "-" {
        let dir =
            tempfile::tempdir().context("failed to create a directory for the stdin context")?;
        rbuild::layer::apply_layer(std::io::stdin().lock(), dir.path())
            .context("failed to read the build context tar from stdin")?;
        opts = opts.context(dir.path());
        if let Some(f) = &args.file {
            opts = opts.dockerfile(dir.path().join(f));
        }
        _stdin_context = dir;
    } else if args.file.as_deref() == Some(Path::new("-")) {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("failed to read the Dockerfile from stdin")?;
        opts = opts.dockerfile_text("Dockerfile", text);
    }
    if !opts.context_dir().is_dir() {
        anyhow::bail!(
            "build context {} is not a directory",
            opts.context_dir().display()
        );
    }
    let store = super::open_store(root)?;
    let mode = match args.progress {
        ProgressArg::Plain => Mode::Plain,
        ProgressArg::Auto => Mode::auto(),
    };
    let renderer = Renderer::new(mode);
    let mut builder = Builder::new(store).progress(renderer.sink());
    if let Some(executor) = in_place_executor(root, &opts, &args)? {
        builder = builder.executor(executor);
    }
    if let Ok(client) = flags.client() {
        builder = builder.registry(client);
    }
    let result = builder.build(opts).await;
    renderer.finish();
    let out = result?;
    if args.push {
        // The build is done and tagged; pushing reads the image back from the store, exactly
        // as `rbuild push TAG` would.
        let client = flags.client()?;
        let digest = out.digest.to_string();
        for tag in &out.tags {
            super::push::push_one(builder.store(), &client, &digest, tag).await?;
        }
    }
    if let Some(path) = &args.digest_file {
        std::fs::write(path, out.digest.to_string())
            .with_context(|| format!("failed to write the digest to {}", path.display()))?;
    }
    println!("{}", out.digest);
    Ok(ExitCode::SUCCESS)
}
