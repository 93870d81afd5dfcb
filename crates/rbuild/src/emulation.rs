//! Running RUN steps of a foreign platform: the kernel's binfmt_misc hands a foreign ELF binary
//! to a registered interpreter (QEMU user emulation). With the `F` flag (Debian's
//! `qemu-user-static` registers with it) the kernel opens the interpreter at registration, so
//! exec works in any mount namespace, including the sandbox's root: nothing of the emulator has
//! to be inside the image.

use std::path::Path;

use crate::config::Platform;

/// Where binfmt_misc is mounted.
const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// Whether this machine runs `platform`'s binaries without an emulator: the same architecture,
/// or one the CPU runs natively (386 on amd64, as the kernel's compat mode does).
pub(crate) fn is_native(platform: &Platform) -> bool {
    let host = Platform::host();
    platform.os == host.os
        && (platform.architecture == host.architecture
            || host.architecture == "amd64" && platform.architecture == "386")
}

/// QEMU's name for a Go architecture (the suffix of `qemu-<name>` and of its binfmt entry).
pub(crate) fn qemu_name(platform: &Platform) -> String {
    match platform.architecture.as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        "mips64le" => "mips64el",
        "mipsle" => "mipsel",
        "loong64" => "loongarch64",
        other => other,
    }
    .to_owned()
}

/// Why RUN steps for `platform` cannot run here (`None`: they can). Reads the binfmt_misc entry
/// QEMU registers as `qemu-<arch>` (Debian's `/usr/lib/binfmt.d`, `tonistiigi/binfmt` and
/// Fedora all use that name).
pub(crate) fn missing(platform: &Platform) -> Option<String> {
    missing_in(Path::new(BINFMT_MISC), platform)
}

fn missing_in(root: &Path, platform: &Platform) -> Option<String> {
    if is_native(platform) {
        return None;
    }
    if !root.join("status").exists() {
        return Some(format!("binfmt_misc is not mounted at {}", root.display()));
    }
    let name = format!("qemu-{}", qemu_name(platform));
    let text = match std::fs::read_to_string(root.join(&name)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("no binfmt_misc entry `{name}` is registered"));
        }
        Err(e) => return Some(format!("cannot read binfmt_misc entry `{name}`: {e}")),
    };
    if text.lines().next() != Some("enabled") {
        return Some(format!("the binfmt_misc entry `{name}` is disabled"));
    }
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags: "))
        .unwrap_or_default();
    if !flags.contains('F') {
        // Without F the kernel looks the interpreter up in the step's own root, where the
        // image does not have it.
        return Some(format!(
            "the binfmt_misc entry `{name}` lacks the F (fix binary) flag, so its interpreter is not found inside the build's root"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm64() -> Platform {
        "linux/arm64".parse().unwrap()
    }

    #[test]
    fn names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let m = missing_in(dir.path(), &arm64()).unwrap();
        assert!(m.contains("not mounted"), "{m}");
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        let m = missing_in(dir.path(), &arm64()).unwrap();
        assert!(m.contains("`qemu-aarch64` is registered"), "{m}");
        std::fs::write(
            dir.path().join("qemu-aarch64"),
            "disabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\n",
        )
        .unwrap();
        assert!(
            missing_in(dir.path(), &arm64())
                .unwrap()
                .contains("disabled")
        );
        std::fs::write(
            dir.path().join("qemu-aarch64"),
            "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: OC\n",
        )
        .unwrap();
        assert!(
            missing_in(dir.path(), &arm64())
                .unwrap()
                .contains("F (fix binary)")
        );
        std::fs::write(
            dir.path().join("qemu-aarch64"),
            "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\n",
        )
        .unwrap();
        assert_eq!(missing_in(dir.path(), &arm64()), None);
        assert_eq!(missing_in(dir.path(), &Platform::host()), None);
    }
}
