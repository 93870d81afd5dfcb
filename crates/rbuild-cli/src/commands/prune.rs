//! `rbuild prune`.

use std::path::Path;
use std::process::ExitCode;

use rbuild::store::PruneOptions;

/// Arguments of `rbuild prune`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Also remove step-cache entries (all of them, or beyond `--keep-storage`).
    #[arg(long)]
    cache: bool,
    /// With `--cache`: keep the newest cache entries whose own content fits in SIZE
    /// (`512MB`, `10GiB`, bytes).
    #[arg(long, value_name = "SIZE", requires = "cache")]
    keep_storage: Option<String>,
}

/// Parses `512MB`, `1.5GiB`, `1000` (docker's units: kB/MB/GB decimal, KiB/MiB/GiB binary).
fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size `{s}`"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => anyhow::bail!("invalid size `{s}`: unknown unit `{unit}`"),
    };
    // Sizes are far below 2^53: the float round trip is exact enough.
    Ok((n * mult) as u64)
}

/// Runs `rbuild prune`.
pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let store = super::open_store(root)?;
    let mut opts = PruneOptions::default().cache(args.cache);
    if let Some(size) = &args.keep_storage {
        opts = opts.keep_storage(parse_size(size)?);
    }
    let report = store.prune(opts)?;
    println!(
        "Deleted {} blobs, {} unpacked layers, {} cache entries, {} temporary entries",
        report.blobs, report.layer_dirs, report.cache_entries, report.temps
    );
    println!(
        "Total reclaimed space: {}",
        super::images::human_size(report.bytes_freed)
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("512MB").unwrap(), 512_000_000);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5kb").unwrap(), 1500);
        assert!(parse_size("10XB").is_err());
    }
}
