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
pub struct Args {
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
    digest_file: Option<PathBuf>,
    /// The build context directory.
    context: PathBuf,
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
pub async fn run(root: &Path, flags: &RegistryFlags, args: Args) -> anyhow::Result<ExitCode> {
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
    if !args.context.is_dir() {
        anyhow::bail!(
            "build context {} is not a directory",
            args.context.display()
        );
    }
    let store = super::open_store(root)?;
    let mode = match args.progress {
        ProgressArg::Plain => Mode::Plain,
        ProgressArg::Auto => Mode::auto(),
    };
    let renderer = Renderer::new(mode);
    let builder = Builder::new(store).progress(renderer.sink());
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
