//! `rbuild history`: the deploys and rollbacks recorded on a Deployment.

use std::process::ExitCode;

use anyhow::Context as _;
use rbuild_deploy::HistoryEntry;
use rbuild_deploy::history::Action;

use super::deploy::ClusterArgs;

/// Arguments of `rbuild history`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The Deployment.
    pub deployment: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The history as a table, oldest first, numbered like `kubectl rollout history` revisions.
pub(crate) fn table(entries: &[HistoryEntry]) -> String {
    let mut rows = vec![[
        "REVISION".to_owned(),
        "TIME".to_owned(),
        "ACTION".to_owned(),
        "CONTAINER".to_owned(),
        "IMAGE".to_owned(),
    ]];
    for (i, e) in entries.iter().enumerate() {
        let action = match e.action {
            Action::Deploy => "deploy",
            Action::Rollback => "rollback",
        };
        rows.push([
            (i + 1).to_string(),
            e.at.clone(),
            action.to_owned(),
            e.container.clone(),
            e.image.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<w$}", w = widths[c]))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Runs `rbuild history`.
///
/// # Errors
///
/// Connection and API failures, an unreadable history annotation.
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let deployer = args.cluster.connect().await?;
    let entries = deployer
        .history(&args.deployment, args.cluster.namespace.as_deref())
        .await
        .with_context(|| {
            format!(
                "failed to read the history of deployment {}",
                args.deployment
            )
        })?;
    if entries.is_empty() {
        eprintln!("deployment {} has no deploy history yet", args.deployment);
    } else {
        print!("{}", table(&entries));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_numbers_entries_oldest_first() {
        let entry = |image: &str, action| HistoryEntry {
            container: "app".into(),
            image: image.into(),
            previous: "old".into(),
            action,
            at: "2026-01-01T00:00:00Z".into(),
        };
        let t = table(&[entry("a:1", Action::Deploy), entry("a:0", Action::Rollback)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "REVISION  TIME                  ACTION    CONTAINER  IMAGE"
        );
        assert_eq!(
            lines[1],
            "1         2026-01-01T00:00:00Z  deploy    app        a:1"
        );
        assert_eq!(
            lines[2],
            "2         2026-01-01T00:00:00Z  rollback  app        a:0"
        );
    }
}
