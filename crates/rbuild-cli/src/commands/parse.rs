//! `rbuild parse`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::ValueEnum;

/// Arguments of `rbuild parse`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The Dockerfile.
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    file: PathBuf,
    /// `json` for scripts, `dump` for BuildKit's AST dump.
    #[arg(long, value_enum, default_value_t = Format::Dump)]
    format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Dump,
}

/// Runs `rbuild parse`.
pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("failed to read {}", args.file.display()))?;
    let df = match rbuild::dockerfile::parse(&text) {
        Ok(df) => df,
        Err(e) => {
            eprintln!("{}:{}: {}", args.file.display(), e.line(), e.kind());
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in &df.warnings {
        eprintln!("warning: {}:{}: {}", args.file.display(), w.line, w.message);
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&df)?),
        Format::Dump => print!("{}", df.dump()),
    }
    Ok(ExitCode::SUCCESS)
}
