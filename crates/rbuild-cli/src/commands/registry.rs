//! `rbuild registry conformance`: the OCI distribution-spec conformance workflows against a
//! registry, with the reference suite's environment variables so that CI jobs switch by
//! changing the command.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use rbuild_registry::conformance::{self, ConformanceOptions, Workflow};
use rbuild_registry::{Client, Credentials};

use super::RegistryFlags;

/// Subcommands of `rbuild registry`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Check a registry against the OCI distribution spec 1.1 (pull, push, content discovery,
    /// content management); exit 1 when any selected check fails.
    Conformance(ConformanceArgs),
}

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// A summary per workflow, failing checks with their request and response lines.
    Text,
    /// JUnit XML, for CI test reports.
    Junit,
    /// `{"workflows": [{"name", "checks": [{"name", "status", "spec", "detail"}]}]}`.
    Json,
}

/// Arguments of `rbuild registry conformance`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConformanceArgs {
    /// `REGISTRY/NAMESPACE`, e.g. `127.0.0.1:5000/conformance/test` [default: from
    /// $OCI_ROOT_URL and $OCI_NAMESPACE].
    target: Option<String>,
    /// Workflows to run, comma-separated: pull, push, content-discovery, content-management
    /// [default: those whose $OCI_TEST_PULL, $OCI_TEST_PUSH, $OCI_TEST_CONTENT_DISCOVERY,
    /// $OCI_TEST_CONTENT_MANAGEMENT is true, else all].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    workflows: Vec<Workflow>,
    /// The repository blobs are mounted into for the cross-mount checks [default:
    /// NAMESPACE-crossmount].
    #[arg(long, env = "OCI_CROSSMOUNT_NAMESPACE", value_name = "NAMESPACE")]
    cross_mount: Option<String>,
    /// Username for the registry [default: config.json credentials].
    #[arg(short = 'u', long, env = "OCI_USERNAME")]
    username: Option<String>,
    /// Read the password from stdin (else $OCI_PASSWORD).
    #[arg(long)]
    password_stdin: bool,
    /// Leave what the run pushed in the registry.
    #[arg(long)]
    keep: bool,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Also write `junit.xml` and `report.json` into this directory (the reference suite's
    /// `OCI_REPORT_DIR`, where CI jobs collect its `junit.xml`).
    #[arg(long, env = "OCI_REPORT_DIR", value_name = "DIR")]
    report_dir: Option<PathBuf>,
}

/// Splits `[scheme://]host[:port]/namespace`; `http://` marks the registry as plain HTTP.
fn split_target(target: &str) -> anyhow::Result<(String, String, bool)> {
    let (plain, rest) = if let Some(r) = target.strip_prefix("http://") {
        (true, r)
    } else {
        (false, target.strip_prefix("https://").unwrap_or(target))
    };
    let (registry, namespace) = rest.split_once('/').with_context(|| {
        format!("`{target}` has no namespace: expected REGISTRY/NAMESPACE, e.g. 127.0.0.1:5000/conformance")
    })?;
    let namespace = namespace.trim_matches('/');
    if registry.is_empty() || namespace.is_empty() {
        anyhow::bail!("`{target}`: expected REGISTRY/NAMESPACE, e.g. 127.0.0.1:5000/conformance");
    }
    Ok((registry.to_owned(), namespace.to_owned(), plain))
}

/// The target from `$OCI_ROOT_URL` (`http://host:port`) and `$OCI_NAMESPACE`, as the reference
/// suite reads them.
fn target_from_env() -> anyhow::Result<String> {
    let root = std::env::var("OCI_ROOT_URL").ok().filter(|v| !v.is_empty());
    let ns = std::env::var("OCI_NAMESPACE")
        .ok()
        .filter(|v| !v.is_empty());
    match (root, ns) {
        (Some(root), Some(ns)) => Ok(format!("{}/{ns}", root.trim_end_matches('/'))),
        _ => anyhow::bail!(
            "no registry given: rbuild registry conformance REGISTRY/NAMESPACE (or set OCI_ROOT_URL and OCI_NAMESPACE)"
        ),
    }
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// The reference suite's switches: a workflow runs when its variable is true.
fn workflows_from_env() -> Vec<Workflow> {
    [
        ("OCI_TEST_PULL", Workflow::Pull),
        ("OCI_TEST_PUSH", Workflow::Push),
        ("OCI_TEST_CONTENT_DISCOVERY", Workflow::ContentDiscovery),
        ("OCI_TEST_CONTENT_MANAGEMENT", Workflow::ContentManagement),
    ]
    .into_iter()
    .filter(|(var, _)| std::env::var(var).is_ok_and(|v| truthy(&v)))
    .map(|(_, w)| w)
    .collect()
}

/// Runs `rbuild registry …`.
pub(crate) async fn run(flags: &RegistryFlags, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Conformance(args) => conformance(flags, args).await,
    }
}

async fn conformance(flags: &RegistryFlags, args: ConformanceArgs) -> anyhow::Result<ExitCode> {
    let target = match &args.target {
        Some(t) => t.clone(),
        None => target_from_env()?,
    };
    let (registry, namespace, plain) = split_target(&target)?;
    let mut options = flags.options();
    if plain {
        options = options.insecure_registry(&registry);
    }
    if let Some(username) = &args.username {
        let password = if args.password_stdin {
            let mut p = String::new();
            std::io::stdin()
                .read_to_string(&mut p)
                .context("failed to read the password from stdin")?;
            p.trim_end_matches(['\r', '\n']).to_owned()
        } else {
            std::env::var("OCI_PASSWORD").unwrap_or_default()
        };
        if password.is_empty() {
            anyhow::bail!("a password is needed for {username}: --password-stdin or $OCI_PASSWORD");
        }
        options = options.credentials(&registry, Credentials::password(username, &password));
    } else if args.password_stdin {
        anyhow::bail!("--password-stdin needs a username: -u USER");
    }
    let client = Client::new(options)?;
    let workflows = if args.workflows.is_empty() {
        workflows_from_env()
    } else {
        args.workflows.clone()
    };
    let options = ConformanceOptions::default()
        .workflows(&workflows)
        .cross_mount(args.cross_mount.clone())
        .keep(args.keep);
    let report = conformance::run(&client, &registry, &namespace, &options)
        .await
        .with_context(|| format!("failed to check {registry}/{namespace}"))?;
    if let Some(dir) = &args.report_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create the report directory {}", dir.display()))?;
        let json = serde_json::to_string_pretty(&report.to_json())?;
        for (name, content) in [("junit.xml", report.to_junit()), ("report.json", json)] {
            let path = dir.join(name);
            std::fs::write(&path, content)
                .with_context(|| format!("failed to write {}", path.display()))?;
        }
    }
    match args.format {
        Format::Text => print!("{}", report.to_text()),
        Format::Junit => print!("{}", report.to_junit()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report.to_json())?),
    }
    if args.format != Format::Text && !report.leftovers.is_empty() {
        eprintln!("left behind (the registry refused to delete them):");
        for l in &report.leftovers {
            eprintln!("  {l}");
        }
    }
    Ok(if report.has_failures() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_into_registry_and_namespace() {
        assert_eq!(
            split_target("127.0.0.1:5000/conformance/test").unwrap(),
            ("127.0.0.1:5000".into(), "conformance/test".into(), false)
        );
        assert_eq!(
            split_target("http://reg.lan:5000/ns/").unwrap(),
            ("reg.lan:5000".into(), "ns".into(), true)
        );
        assert!(split_target("127.0.0.1:5000").is_err());
        assert!(split_target("127.0.0.1:5000/").is_err());
        assert!(truthy("TRUE") && truthy("1") && !truthy("0") && !truthy(""));
    }
}
