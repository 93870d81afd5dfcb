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
    /// `json` for scripts (the typed, validated instructions), `dump` for BuildKit's AST dump
    /// (the parser alone, as BuildKit's parser tests print it).
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
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("failed to read {}", args.file.display()))?;
    // BuildKit reads bytes: a file that is not UTF-8 still parses (bad sequences become U+FFFD).
    let text = String::from_utf8_lossy(&bytes);
    let file = args.file.display();
    let report = |e: rbuild::dockerfile::Error| {
        eprintln!("{file}:{}: {}", e.line(), e.kind());
        ExitCode::FAILURE
    };
    match args.format {
        // `dump` is BuildKit's `Node.Dump()` of whatever its parser accepts: the instruction
        // rules (unknown flags, argument counts, a first FROM) belong to `json` and `build`.
        Format::Dump => {
            let ast = match rbuild::dockerfile::parse_ast(&text) {
                Ok(ast) => ast,
                Err(e) => return Ok(report(e)),
            };
            for w in &ast.warnings {
                eprintln!("warning: {file}:{}: {}", w.line, w.message);
            }
            print!("{}", ast.dump());
        }
        Format::Json => {
            let df = match rbuild::dockerfile::parse(&text) {
                Ok(df) => df,
                Err(e) => return Ok(report(e)),
            };
            for w in &df.warnings {
                eprintln!("warning: {file}:{}: {}", w.line, w.message);
            }
            println!("{}", serde_json::to_string_pretty(&df)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
