//! `rbuild executor`: kaniko's command line, so that a CI job that ran `/kaniko/executor`
//! changes only its image and path. The flags are translated into an `rbuild build` (and
//! `rbuild save` for `--tar-path`), which picks the in-place executor by itself in an
//! unprivileged container.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use super::RegistryFlags;

/// Arguments of `rbuild executor` (kaniko's names and forms).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The build context: a directory, `dir://DIR`, or `tar://FILE` (a local tarball, gzip
    /// or plain) [default: the working directory].
    #[arg(short = 'c', long, value_name = "CONTEXT")]
    context: Option<String>,
    /// The Dockerfile, relative to the context or absolute [default: Dockerfile].
    #[arg(short = 'f', long, value_name = "PATH")]
    dockerfile: Option<PathBuf>,
    /// Where to push the image (repeatable); the first also names the cache repository.
    #[arg(short = 'd', long = "destination", value_name = "REF")]
    destinations: Vec<String>,
    /// A build argument (repeatable).
    #[arg(long = "build-arg", value_name = "K=V")]
    build_args: Vec<String>,
    /// The stage to build.
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// A label for the image (repeatable).
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    /// Use and fill a registry cache of the steps (`--cache-repo`, else DESTINATION/cache).
    #[arg(
        long = "cache",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    cache: bool,
    /// The registry repository of the step cache.
    #[arg(long = "cache-repo", value_name = "REPO")]
    cache_repo: Option<String>,
    /// Accepted for kaniko's sake; rbuild's cache entries do not expire by age.
    #[arg(long = "cache-ttl", value_name = "DURATION")]
    cache_ttl: Option<String>,
    /// Write the image's digest here.
    #[arg(long = "digest-file", value_name = "FILE")]
    digest_file: Option<PathBuf>,
    /// Write `DESTINATION@DIGEST` (one line per destination) here.
    #[arg(long = "image-name-with-digest-file", value_name = "FILE")]
    image_name_with_digest_file: Option<PathBuf>,
    /// Build only; do not push.
    #[arg(
        long = "no-push",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    no_push: bool,
    /// Also write the image as a `docker load` tarball here.
    #[arg(long = "tar-path", value_name = "FILE")]
    tar_path: Option<PathBuf>,
    /// Speak plain HTTP to every destination registry.
    #[arg(
        long = "insecure",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    insecure: bool,
    /// Speak plain HTTP to this registry (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
    /// Do not verify registries' TLS certificates.
    #[arg(
        long = "skip-tls-verify",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    skip_tls_verify: bool,
    /// Accepted for kaniko's sake; pulls go to the registries the Dockerfile names.
    #[arg(long = "registry-mirror", value_name = "HOST")]
    registry_mirrors: Vec<String>,
    /// Reproducible image: times set to the epoch (`--source-date-epoch 0`).
    #[arg(
        long = "reproducible",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    reproducible: bool,
    /// Accepted for kaniko's sake; rbuild snapshots only what changed anyway.
    #[arg(
        long = "single-snapshot",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    single_snapshot: bool,
    /// Accepted for kaniko's sake; the container's filesystem is left as the last stage made it.
    #[arg(
        long = "cleanup",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    cleanup: bool,
    /// Accepted for kaniko's sake (`panic|fatal|error|warn|info|debug|trace`).
    #[arg(short = 'v', long, value_name = "LEVEL")]
    verbosity: Option<String>,
    /// Accepted for kaniko's sake; pushes retry transient failures by themselves.
    #[arg(long = "push-retry", value_name = "N")]
    push_retry: Option<u32>,
    /// A path the in-place build leaves alone (repeatable).
    #[arg(long = "ignore-path", value_name = "PATH")]
    ignore_paths: Vec<PathBuf>,
    /// A build secret for `RUN --mount=type=secret`: `id=ID,src=FILE` or `id=ID,env=VAR`.
    #[arg(long = "secret", value_name = "SPEC")]
    secrets: Vec<String>,
    /// Build in place even outside a container (it deletes everything else under `/`).
    #[arg(long)]
    force: bool,
    /// Accepted for kaniko's sake; rbuild compares stat data, never file times alone.
    #[arg(long = "snapshot-mode", value_name = "MODE")]
    snapshot_mode: Option<String>,
    /// Accepted for kaniko's sake.
    #[arg(
        long = "use-new-run",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    use_new_run: bool,
    /// Accepted for kaniko's sake.
    #[arg(
        long = "compressed-caching",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    compressed_caching: bool,
}

/// `rbuild build` and `rbuild save`, parsed from the argv this command makes for them.
#[derive(Debug, clap::Parser)]
#[command(name = "rbuild", no_binary_name = false)]
struct Translated {
    #[command(flatten)]
    registry: RegistryFlags,
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    Build(Box<super::build::Args>),
    Save(super::save::Args),
}

impl Args {
    /// The flags that rbuild accepts but that change nothing, named once on stderr.
    fn ignored(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.cache_ttl.is_some() {
            out.push("--cache-ttl");
        }
        if !self.registry_mirrors.is_empty() {
            out.push("--registry-mirror");
        }
        if self.single_snapshot {
            out.push("--single-snapshot");
        }
        if self.cleanup {
            out.push("--cleanup");
        }
        if self.verbosity.is_some() {
            out.push("--verbosity");
        }
        if self.push_retry.is_some() {
            out.push("--push-retry");
        }
        if self.snapshot_mode.is_some() {
            out.push("--snapshot-mode");
        }
        if self.use_new_run {
            out.push("--use-new-run");
        }
        if self.compressed_caching {
            out.push("--compressed-caching");
        }
        out
    }

    /// The `rbuild build` argv these flags mean (after the context is on disk at `context`).
    fn build_argv(&self, context: &Path) -> anyhow::Result<Vec<OsString>> {
        let mut argv: Vec<OsString> = vec!["rbuild".into()];
        if self.skip_tls_verify {
            argv.push("--tls-verify=false".into());
        }
        let registry_of = |r: &str| r.split('/').next().unwrap_or_default().to_owned();
        let mut insecure = self.insecure_registries.clone();
        if self.insecure {
            insecure.extend(self.destinations.iter().map(|d| registry_of(d)));
            if let Some(c) = &self.cache_repo {
                insecure.push(registry_of(c));
            }
        }
        for h in insecure {
            argv.push("--insecure-registry".into());
            argv.push(h.into());
        }
        argv.extend(["build".into(), "--progress".into(), "plain".into()]);
        let dockerfile = match &self.dockerfile {
            Some(f) if f.is_absolute() => f.clone(),
            Some(f) => context.join(f),
            None => context.join("Dockerfile"),
        };
        argv.push("-f".into());
        argv.push(dockerfile.into());
        for d in &self.destinations {
            argv.extend(["-t".into(), d.into()]);
        }
        if !self.no_push && !self.destinations.is_empty() {
            argv.push("--push".into());
        }
        for (flag, values) in [
            ("--build-arg", &self.build_args),
            ("--label", &self.labels),
            ("--secret", &self.secrets),
        ] {
            for v in values {
                argv.extend([flag.into(), v.into()]);
            }
        }
        if let Some(t) = &self.target {
            argv.extend(["--target".into(), t.into()]);
        }
        if self.cache {
            let repo = match (&self.cache_repo, self.destinations.first()) {
                (Some(r), _) => r.clone(),
                // kaniko: the destination's repository with `/cache` appended.
                (None, Some(d)) => {
                    let name = d.split('@').next().unwrap_or(d);
                    let repo = match name.rfind(':') {
                        Some(i) if !name[i..].contains('/') => &name[..i],
                        _ => name,
                    };
                    format!("{repo}/cache")
                }
                (None, None) => anyhow::bail!(
                    "--cache needs --cache-repo or a --destination to name the cache repository"
                ),
            };
            argv.extend([
                "--cache-from".into(),
                repo.clone().into(),
                "--cache-to".into(),
                repo.into(),
            ]);
        }
        if let Some(f) = &self.digest_file {
            argv.extend(["--digest-file".into(), f.into()]);
        }
        if self.reproducible {
            argv.extend(["--source-date-epoch".into(), "0".into()]);
        }
        for p in &self.ignore_paths {
            argv.extend(["--ignore-path".into(), p.into()]);
        }
        if self.force {
            argv.push("--force".into());
        }
        argv.push(context.into());
        Ok(argv)
    }
}

/// Runs `rbuild executor`.
pub(crate) async fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    for flag in args.ignored() {
        eprintln!("rbuild executor: {flag} is accepted for kaniko's sake and changes nothing");
    }
    // Under the store: an in-place build clears /tmp.
    let (context, _unpacked) = context_dir(args.context.as_deref(), &root.join("tmp"))?;
    let argv = args.build_argv(&context)?;
    let translated = Translated::try_parse_from(&argv).context("invalid executor flags")?;
    let Sub::Build(build) = translated.command else {
        anyhow::bail!("internal: the translated command is not a build");
    };
    let digest_path = root
        .join("tmp")
        .join(format!("executor-digest-{}", std::process::id()));
    let mut build = build;
    if args.digest_file.is_none()
        && (args.image_name_with_digest_file.is_some() || args.tar_path.is_some())
    {
        build.digest_file = Some(digest_path.clone());
    }
    let code = super::build::run(root, &translated.registry, *build).await?;
    let digest_file = args.digest_file.clone().unwrap_or(digest_path.clone());
    let digest = std::fs::read_to_string(&digest_file).unwrap_or_default();
    let _ = std::fs::remove_file(&digest_path);
    if let Some(path) = &args.image_name_with_digest_file {
        let lines: String = args
            .destinations
            .iter()
            .map(|d| format!("{}@{digest}\n", d.split('@').next().unwrap_or(d)))
            .collect();
        std::fs::write(path, lines)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    if let Some(tar) = &args.tar_path {
        let reference = args.destinations.first().cloned().unwrap_or(digest.clone());
        let save = Translated::try_parse_from([
            OsString::from("rbuild"),
            "save".into(),
            reference.into(),
            "-o".into(),
            tar.into(),
            "--format".into(),
            "docker-archive".into(),
        ])
        .context("invalid --tar-path")?;
        if let Sub::Save(save) = save.command {
            super::save::run(root, save)?;
        }
    }
    Ok(code)
}

/// The context as a directory: `DIR`, `dir://DIR`, or `tar://FILE` unpacked (safely) into a
/// temporary directory, which the second value keeps alive.
fn context_dir(
    spec: Option<&str>,
    tmp: &Path,
) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    let spec = spec.unwrap_or(".");
    if let Some(tar) = spec.strip_prefix("tar://") {
        std::fs::create_dir_all(tmp)
            .with_context(|| format!("failed to create {}", tmp.display()))?;
        let dir =
            tempfile::tempdir_in(tmp).context("failed to create a directory for the context")?;
        let file = std::fs::File::open(tar)
            .with_context(|| format!("failed to open the context tarball {tar}"))?;
        let mut reader = std::io::BufReader::new(file);
        let gzip = std::io::BufRead::fill_buf(&mut reader)
            .map(|b| b.starts_with(&[0x1f, 0x8b]))
            .unwrap_or(false);
        let result = if gzip {
            rbuild::layer::apply_layer(flate2::read::GzDecoder::new(reader), dir.path())
        } else {
            rbuild::layer::apply_layer(reader, dir.path())
        };
        result.with_context(|| format!("failed to unpack the context tarball {tar}"))?;
        return Ok((dir.path().to_owned(), Some(dir)));
    }
    if let Some(rest) = spec.split_once("://") {
        return match rest {
            ("dir", dir) => Ok((PathBuf::from(dir), None)),
            (scheme, _) => anyhow::bail!(
                "unsupported --context scheme `{scheme}://` (rbuild takes a directory, dir:// or \
                 tar:// with a local file; fetch remote contexts in an earlier CI step)"
            ),
        };
    }
    Ok((PathBuf::from(spec), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: Args,
        }
        let mut argv = vec!["executor"];
        argv.extend_from_slice(args);
        Wrap::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn kaniko_flags_become_a_build() {
        let a = parse(&[
            "--context",
            "dir:///workspace",
            "--dockerfile",
            "docker/Dockerfile",
            "--destination",
            "registry.example/group/app:1.2",
            "--destination=registry.example/group/app:latest",
            "--cache=true",
            "--build-arg",
            "A=1",
            "--reproducible",
            "--insecure",
            "--skip-tls-verify",
            "--cache-ttl=24h",
        ]);
        assert_eq!(a.ignored(), ["--cache-ttl"]);
        let argv: Vec<String> = a
            .build_argv(Path::new("/workspace"))
            .unwrap()
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let text = argv.join(" ");
        assert!(text.starts_with("rbuild --tls-verify=false --insecure-registry registry.example"));
        assert!(text.contains("build --progress plain -f /workspace/docker/Dockerfile"));
        assert!(text.contains(
            "-t registry.example/group/app:1.2 -t registry.example/group/app:latest --push"
        ));
        assert!(text.contains(
            "--cache-from registry.example/group/app/cache --cache-to registry.example/group/app/cache"
        ));
        assert!(text.contains("--build-arg A=1"));
        assert!(text.contains("--source-date-epoch 0"));
        assert!(text.ends_with(" /workspace"));
        let translated = Translated::try_parse_from(&argv).unwrap();
        assert!(matches!(translated.command, Sub::Build(_)));
    }

    #[test]
    fn no_push_and_unknown_flags() {
        let a = parse(&[
            "--no-push",
            "--destination",
            "r.example/a:1",
            "--cache=false",
        ]);
        let argv = a.build_argv(Path::new("/c")).unwrap();
        assert!(!argv.iter().any(|a| a == "--push"));
        assert!(!argv.iter().any(|a| a == "--cache-from"));
        #[derive(Debug, clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            _args: Args,
        }
        let err = Wrap::try_parse_from(["executor", "--no-such-flag"]).unwrap_err();
        assert!(err.to_string().contains("--no-such-flag"), "{err}");
    }

    #[test]
    fn contexts_from_dirs_and_remote_schemes() {
        assert_eq!(
            context_dir(Some("dir:///w"), Path::new("/nonexistent"))
                .unwrap()
                .0,
            PathBuf::from("/w")
        );
        assert_eq!(
            context_dir(Some("/w"), Path::new("/nonexistent"))
                .unwrap()
                .0,
            PathBuf::from("/w")
        );
        let err =
            context_dir(Some("s3://bucket/ctx.tar.gz"), Path::new("/nonexistent")).unwrap_err();
        assert!(
            err.to_string()
                .contains("unsupported --context scheme `s3://`"),
            "{err}"
        );
    }
}
