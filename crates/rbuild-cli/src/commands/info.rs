//! `rbuild info`: how a build would run on this machine, as this user, and why.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::ExitCode;

use rbuild::sandbox::userns::{self, Mode};

/// Arguments of `rbuild info`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// Prints the build mode (rootful, rootless with ranges, rootless single-id, user-namespaced
/// root) with its reason, the store, and what is missing; exit 1 when builds cannot run.
pub(crate) fn run(root: &Path, _args: Args) -> anyhow::Result<ExitCode> {
    let mode = userns::detect();
    println!("mode: {}", mode.name());
    println!("  {mode}");
    println!("store: {}", root.display());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let mut ok = true;
    match &mode {
        Mode::Rootful => {
            println!("overlay: kernel overlayfs, trusted.* xattrs (Linux {kernel})");
        }
        Mode::Unavailable { .. } => ok = false,
        _ => {
            let userxattr = kernel_at_least(&kernel, 5, 11);
            println!(
                "overlay: kernel overlayfs in a user namespace with userxattr (Linux {kernel}{})",
                if userxattr {
                    ""
                } else {
                    ": needs 5.11 or later, builds with RUN steps will fail"
                }
            );
            ok &= userxattr;
        }
    }
    if let Mode::Rootless { .. } = &mode {
        for helper in ["newuidmap", "newgidmap"] {
            let path = Path::new("/usr/bin").join(helper);
            let setuid = std::fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o4000 != 0)
                .unwrap_or(false);
            if !setuid {
                println!(
                    "missing: {} is not setuid root; reinstall the `uidmap` package",
                    path.display()
                );
                ok = false;
            }
        }
    }
    if let Mode::Rootful | Mode::NamespacedRoot { .. } = &mode {
        match rbuild::sandbox::check_support() {
            Ok(()) => println!("sandbox: ready"),
            Err(e) => {
                println!("sandbox: {e}");
                ok = false;
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Whether a `uname -r` release is at least `major.minor`.
fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(kernel_at_least("6.18.44-fc-v669", 5, 11));
        assert!(kernel_at_least("5.11.0", 5, 11));
        assert!(!kernel_at_least("5.10.0-28-amd64", 5, 11));
        assert!(!kernel_at_least("4.19.0", 5, 11));
    }
}
