//! [`check_support`]: can this process run sandboxes?

use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::sys;

/// Checks that this process can run sandboxes: root (euid 0, in the host's user namespace or
/// in one of its own, see [`userns`](crate::userns)), overlayfs known to the kernel
/// (`/proc/filesystems`), and mount/pid/uts/ipc namespaces creatable (a forked probe tries
/// `unshare`).
///
/// # Errors
///
/// [`Error::Unsupported`] naming what is missing and what to do about it.
pub fn check_support() -> Result<()> {
    // The engine asks before every RUN step; once the answer is yes it stays yes for this
    // process (root does not go away), so skip the probe fork.
    static SUPPORTED: OnceLock<()> = OnceLock::new();
    if SUPPORTED.get().is_some() {
        return Ok(());
    }
    probe()?;
    let _ = SUPPORTED.set(());
    Ok(())
}

fn probe() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Unsupported {
            what: format!(
                "running sandboxes needs root, here or in a user namespace; this process is \
                 neither ({})",
                crate::userns::detect()
            ),
            remedy: "the rbuild command enters a user namespace by itself; a program that \
                     embeds the engine calls `rbuild_sandbox::userns::enter()` first thing in \
                     `main`",
        });
    }
    let filesystems =
        std::fs::read_to_string("/proc/filesystems").map_err(|e| Error::Unsupported {
            what: format!("cannot read /proc/filesystems ({e})"),
            remedy: "mount /proc",
        })?;
    if !has_overlay(&filesystems) {
        return Err(Error::Unsupported {
            what: "the kernel does not support overlayfs".to_owned(),
            remedy: "load the module with `modprobe overlay`, or use a kernel built with CONFIG_OVERLAY_FS",
        });
    }
    match sys::probe_namespaces() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(errno)) => Err(Error::Unsupported {
            what: format!(
                "cannot create mount/pid/uts/ipc namespaces: {}",
                std::io::Error::from_raw_os_error(errno)
            ),
            remedy: "run outside a restricted container (or give it CAP_SYS_ADMIN and an \
                     unconfined seccomp profile), and check the user.max_*_namespaces sysctls",
        }),
        Err(e) => Err(Error::Unsupported {
            what: format!("cannot fork a namespace probe: {e}"),
            remedy: "check the process limits (ulimit -u)",
        }),
    }
}

/// Whether `/proc/filesystems` lists overlay (`nodev\toverlay`).
fn has_overlay(filesystems: &str) -> bool {
    filesystems
        .lines()
        .any(|line| line.split_whitespace().last() == Some("overlay"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_is_found_in_proc_filesystems_format() {
        assert!(has_overlay("nodev\tsysfs\nnodev\toverlay\n\text4\n"));
        assert!(!has_overlay("nodev\tsysfs\n\text4\n"));
    }
}
