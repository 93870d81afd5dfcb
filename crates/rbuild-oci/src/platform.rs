//! Platforms (`linux/amd64`), as `--platform` and image indexes name them.
//!
//! Parsing and matching follow containerd's `platforms` package: names are normalised
//! (`aarch64` → `arm64`, `x86_64` → `amd64`, `armhf` → `arm/v7`), `arm64` without a variant is
//! `arm64/v8` and `arm` without one is `arm/v7`, `amd64/v1` is plain `amd64`.

use std::fmt;
use std::str::FromStr;

/// A platform `os/arch[/variant]`, as `--platform` takes it (containerd `platforms` grammar,
/// without the OS-version part).
///
/// ```
/// use rbuild_oci::Platform;
///
/// let p: Platform = "linux/aarch64".parse().unwrap();
/// assert_eq!(p.to_string(), "linux/arm64");
/// assert!(p.matches("linux", "arm64", Some("v8")));
/// assert!("linux/sparc".parse::<Platform>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// e.g. `v8` for arm64, `v7` for arm.
    pub variant: Option<String>,
}

/// GOOS values an image index may name (Go's `syslist.go`).
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "illumos",
    "ios",
    "js",
    "linux",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
];

/// GOARCH values (Go's `syslist.go`, the ones images are built for).
const KNOWN_ARCH: &[&str] = &[
    "386", "amd64", "arm", "arm64", "loong64", "mips", "mipsle", "mips64", "mips64le", "ppc64",
    "ppc64le", "riscv64", "s390x", "wasm",
];

impl Platform {
    /// The platform this binary runs on (Go's names for Rust's arch names).
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
        }
    }

    /// The variant a platform has when it names none (containerd `normalizeArch`): `v8` for
    /// `arm64`, `v7` for `arm`.
    pub fn default_variant(architecture: &str) -> Option<&'static str> {
        match architecture {
            "arm64" => Some("v8"),
            "arm" => Some("v7"),
            _ => None,
        }
    }

    /// The variant with the default filled in (`arm64` → `v8`, `arm` → `v7`).
    pub fn effective_variant(&self) -> Option<&str> {
        self.variant
            .as_deref()
            .or_else(|| Self::default_variant(&self.architecture))
    }

    /// Whether an index entry with these fields fits (containerd's matcher after
    /// normalisation): the same OS and architecture, and the same variant, where `arm64`
    /// without a variant is `arm64/v8`, `arm` without one is `arm/v7`, and for other
    /// architectures a missing variant on either side matches.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let lower = architecture.to_ascii_lowercase();
        let (arch, implied) = normalize_arch(&lower);
        if !self.os.eq_ignore_ascii_case(os) || self.architecture != arch {
            return false;
        }
        let theirs = variant
            .map(|v| normalize_variant(&v.to_ascii_lowercase()))
            .or(implied.map(str::to_owned))
            .or_else(|| Self::default_variant(arch).map(str::to_owned));
        match (self.effective_variant(), theirs.as_deref()) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    /// Whether two platforms name the same thing (`linux/arm64` = `linux/arm64/v8`).
    pub fn same_as(&self, other: &Self) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && self.effective_variant() == other.effective_variant()
    }

    /// Parses a comma-separated list (`linux/amd64,linux/arm64`), dropping repeats of the same
    /// platform.
    ///
    /// # Errors
    ///
    /// [`PlatformError`] for the first entry that is not a platform, or an empty list.
    pub fn parse_list(s: &str) -> Result<Vec<Self>, PlatformError> {
        let mut out: Vec<Self> = Vec::new();
        for part in s.split(',') {
            let p: Self = part.trim().parse()?;
            if !out.iter().any(|o| o.same_as(&p)) {
                out.push(p);
            }
        }
        Ok(out)
    }
}

/// Go's name for an architecture and the variant its alias implies (containerd
/// `normalizeArch`).
fn normalize_arch(arch: &str) -> (&str, Option<&'static str>) {
    match arch {
        "i386" | "i686" | "x86" => ("386", None),
        "x86_64" | "x86-64" => ("amd64", None),
        "aarch64" => ("arm64", None),
        "armhf" => ("arm", Some("v7")),
        "armel" => ("arm", Some("v6")),
        other => (other, None),
    }
}

/// Variant spellings containerd treats as one: `8` = `v8`.
fn normalize_variant(variant: &str) -> String {
    if variant.bytes().all(|b| b.is_ascii_digit()) {
        format!("v{variant}")
    } else {
        variant.to_owned()
    }
}

/// A platform string that is not `os/arch[/variant]` with an OS and architecture that images
/// are built for.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlatformError {
    /// Not `os/arch[/variant]`.
    #[error("invalid platform `{0}` (expected os/arch[/variant], e.g. linux/amd64)")]
    Malformed(String),
    /// An OS no image is built for.
    #[error("unknown operating system `{os}` in platform `{platform}` (e.g. linux)")]
    UnknownOs {
        /// The whole string.
        platform: String,
        /// The OS part.
        os: String,
    },
    /// An architecture no image is built for.
    #[error(
        "unknown architecture `{arch}` in platform `{platform}` (one of {})",
        KNOWN_ARCH.join(", ")
    )]
    UnknownArch {
        /// The whole string.
        platform: String,
        /// The architecture part.
        arch: String,
    },
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => (*os, *arch, None),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => (*os, *arch, Some(*v)),
            _ => return Err(PlatformError::Malformed(s.to_owned())),
        };
        let os = os.to_ascii_lowercase();
        if !KNOWN_OS.contains(&os.as_str()) {
            return Err(PlatformError::UnknownOs {
                platform: s.to_owned(),
                os,
            });
        }
        let lower = arch.to_ascii_lowercase();
        let (arch, implied) = normalize_arch(&lower);
        if !KNOWN_ARCH.contains(&arch) {
            return Err(PlatformError::UnknownArch {
                platform: s.to_owned(),
                arch: arch.to_owned(),
            });
        }
        let variant = variant
            .map(|v| normalize_variant(&v.to_ascii_lowercase()))
            .or(implied.map(str::to_owned))
            .filter(|v| !(arch == "amd64" && v == "v1"));
        Ok(Self {
            os,
            architecture: arch.to_owned(),
            variant,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_normalises_like_containerd() {
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        assert_eq!(p("Linux/X86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64");
        assert_eq!(p("linux/armhf").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/arm64/8").to_string(), "linux/arm64/v8");
        assert_eq!(p("linux/amd64/v1").to_string(), "linux/amd64");
        assert_eq!(p("linux/amd64/v3").to_string(), "linux/amd64/v3");
    }

    #[test]
    fn refuses_what_is_no_platform() {
        for bad in [
            "linux",
            "",
            "linux/",
            "/amd64",
            "linux//x",
            "linux/amd64/v8/x",
            "linux/a.b",
        ] {
            assert!(
                matches!(bad.parse::<Platform>(), Err(PlatformError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "linus/amd64".parse::<Platform>(),
            Err(PlatformError::UnknownOs { .. })
        ));
        let e = "linux/sparc".parse::<Platform>().unwrap_err();
        assert!(
            e.to_string().contains("unknown architecture `sparc`"),
            "{e}"
        );
    }

    #[test]
    fn variants_match_as_containerd_normalises_them() {
        assert!(p("linux/arm64").matches("linux", "arm64", Some("v8")));
        assert!(p("linux/arm64/v8").matches("linux", "arm64", None));
        assert!(p("linux/arm64").matches("linux", "aarch64", None));
        assert!(!p("linux/arm64").matches("linux", "arm64", Some("v9")));
        // `arm` is v7 unless it says otherwise.
        assert!(p("linux/arm").matches("linux", "arm", Some("v7")));
        assert!(!p("linux/arm").matches("linux", "arm", Some("v6")));
        assert!(p("linux/arm/v6").matches("linux", "arm", Some("v6")));
        assert!(!p("linux/arm/v6").matches("linux", "arm", None));
        assert!(p("linux/amd64").matches("linux", "amd64", None));
        assert!(!p("linux/amd64").matches("windows", "amd64", None));
        assert!(!p("linux/amd64").matches("linux", "arm64", None));
        assert!(p("linux/arm64").same_as(&p("linux/arm64/v8")));
        assert!(!p("linux/arm/v6").same_as(&p("linux/arm")));
    }

    #[test]
    fn lists_drop_repeats_and_name_the_bad_entry() {
        let l = Platform::parse_list("linux/amd64, linux/arm64,linux/arm64/v8").unwrap();
        assert_eq!(l, vec![p("linux/amd64"), p("linux/arm64")]);
        let e = Platform::parse_list("linux/amd64,linux/nope").unwrap_err();
        assert!(e.to_string().contains("linux/nope"), "{e}");
    }
}
