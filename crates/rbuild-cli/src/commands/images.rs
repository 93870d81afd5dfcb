//! `rbuild images`.

use std::path::Path;
use std::process::ExitCode;

/// Arguments of `rbuild images`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Show full digests.
    #[arg(long)]
    no_trunc: bool,
}

/// A size as docker prints it (decimal units).
pub(crate) fn human_size(bytes: u64) -> String {
    // docker uses decimal units (go-units HumanSize).
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
            + units[i]
    }
}

fn human_age(created: Option<&str>) -> String {
    let Some(t) = created.and_then(|c| {
        time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok()
    }) else {
        return "N/A".to_owned();
    };
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    let (n, unit) = match secs {
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s if s < 86_400 * 30 => (s / 86_400, "day"),
        s if s < 86_400 * 365 => (s / (86_400 * 30), "month"),
        s => (s / (86_400 * 365), "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Runs `rbuild images`.
pub(crate) fn run(root: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let store = super::open_store(root)?;
    let mut rows = vec![[
        "REPOSITORY".to_owned(),
        "TAG".to_owned(),
        "DIGEST".to_owned(),
        "CREATED".to_owned(),
        "SIZE".to_owned(),
    ]];
    for (r, desc) in store.images()? {
        let digest = rbuild::Digest::try_from(desc.digest())?;
        // An index shows its newest image and the size of the platforms in the store.
        let manifests = if rbuild::oci::media_type::is_index(desc.media_type().as_ref()) {
            rbuild::image::index_entries(&store, &digest)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(d, _)| rbuild::Digest::try_from(d.digest()).ok())
                .filter(|d| store.has_blob(d))
                .collect()
        } else {
            vec![digest.clone()]
        };
        let images: Vec<_> = manifests
            .iter()
            .filter_map(|d| rbuild::image::load(&store, d).ok())
            .collect();
        let (created, size) = if images.is_empty() {
            ("N/A".to_owned(), "N/A".to_owned())
        } else {
            let newest = images.iter().filter_map(|i| i.config.created.clone()).max();
            let total: u64 = images
                .iter()
                .flat_map(|i| i.layers.iter().map(|l| l.size))
                .sum();
            (human_age(newest.as_deref()), human_size(total))
        };
        let shown = if args.no_trunc {
            digest.to_string()
        } else {
            format!("sha256:{}", digest.short())
        };
        rows.push([
            r.name(),
            r.tag().unwrap_or("<none>").to_owned(),
            shown,
            created,
            size,
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}
