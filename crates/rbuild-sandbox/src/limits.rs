//! Resource limits of a sandbox: memory and process count through cgroups, `ulimit`s through
//! `setrlimit`, with docker's syntax (`--memory 512m`, `--pids-limit 100`,
//! `--ulimit nofile=1024:2048`).

use std::fmt;
use std::str::FromStr;

/// Resource limits; the default is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in bytes (cgroup `memory.max`, v1 `memory.limit_in_bytes`), swap
    /// included: the sandbox gets no swap beyond it (docker's `--memory-swap` equal to
    /// `--memory`).
    pub memory: Option<u64>,
    /// Most processes and threads at once (cgroup `pids.max`).
    pub pids: Option<u64>,
    /// `setrlimit` values, applied in the sandbox before exec.
    pub ulimits: Vec<Ulimit>,
}

impl Limits {
    /// Whether a cgroup is needed.
    #[must_use]
    pub fn needs_cgroup(&self) -> bool {
        self.memory.is_some() || self.pids.is_some()
    }
}

/// Why a limit could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct ParseLimitError {
    what: &'static str,
    value: String,
    reason: &'static str,
}

/// One `ulimit`: `NAME=SOFT[:HARD]` as docker's `--ulimit` (a missing hard limit equals the
/// soft one; `-1` or `unlimited` is no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ulimit {
    /// The resource (`RLIMIT_NOFILE`…).
    pub resource: UlimitResource,
    /// Soft limit; `None` is unlimited.
    pub soft: Option<u64>,
    /// Hard limit; `None` is unlimited.
    pub hard: Option<u64>,
}

/// Resources `--ulimit` knows, with docker's names (`github.com/docker/go-units` `ulimit.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UlimitResource {
    name: &'static str,
    resource: u32,
}

// Not `expect`: the cast is needed on musl, where the lint does not fire.
#[allow(
    clippy::unnecessary_cast,
    reason = "RLIMIT_* are u32 on glibc but c_int on musl"
)]
const RESOURCES: [(&str, u32); 16] = [
    ("as", libc::RLIMIT_AS as u32),
    ("core", libc::RLIMIT_CORE as u32),
    ("cpu", libc::RLIMIT_CPU as u32),
    ("data", libc::RLIMIT_DATA as u32),
    ("fsize", libc::RLIMIT_FSIZE as u32),
    ("locks", libc::RLIMIT_LOCKS as u32),
    ("memlock", libc::RLIMIT_MEMLOCK as u32),
    ("msgqueue", libc::RLIMIT_MSGQUEUE as u32),
    ("nice", libc::RLIMIT_NICE as u32),
    ("nofile", libc::RLIMIT_NOFILE as u32),
    ("nproc", libc::RLIMIT_NPROC as u32),
    ("rss", libc::RLIMIT_RSS as u32),
    ("rtprio", libc::RLIMIT_RTPRIO as u32),
    ("rttime", libc::RLIMIT_RTTIME as u32),
    ("sigpending", libc::RLIMIT_SIGPENDING as u32),
    ("stack", libc::RLIMIT_STACK as u32),
];

impl UlimitResource {
    /// docker's name (`nofile`).
    #[must_use]
    pub fn name(self) -> &'static str {
        self.name
    }

    /// The `RLIMIT_*` number.
    #[must_use]
    pub fn resource(self) -> u32 {
        self.resource
    }
}

fn parse_value(what: &'static str, s: &str) -> Result<Option<u64>, ParseLimitError> {
    if s == "-1" || s.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    s.parse::<u64>().map(Some).map_err(|_| ParseLimitError {
        what,
        value: s.to_owned(),
        reason: "expected a number, -1 or unlimited",
    })
}

impl FromStr for Ulimit {
    type Err = ParseLimitError;

    /// `NAME=SOFT[:HARD]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseLimitError {
            what: "ulimit",
            value: s.to_owned(),
            reason,
        };
        let (name, values) = s
            .split_once('=')
            .ok_or_else(|| err("expected NAME=SOFT[:HARD], like nofile=1024:2048"))?;
        let (name, resource) = RESOURCES
            .iter()
            .find(|(n, _)| *n == name)
            .copied()
            .ok_or_else(|| err("unknown resource (as, core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack)"))?;
        let (soft, hard) = match values.split_once(':') {
            Some((soft, hard)) => (soft, hard),
            None => (values, values),
        };
        let soft = parse_value("ulimit", soft)?;
        let hard = parse_value("ulimit", hard)?;
        if let (Some(s), Some(h)) = (soft, hard) {
            if s > h {
                return Err(err("the soft limit is above the hard limit"));
            }
        } else if soft.is_none() && hard.is_some() {
            return Err(err("the soft limit is above the hard limit"));
        }
        Ok(Ulimit {
            resource: UlimitResource { name, resource },
            soft,
            hard,
        })
    }
}

impl fmt::Display for Ulimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = |x: Option<u64>| x.map_or_else(|| "-1".to_owned(), |x| x.to_string());
        write!(
            f,
            "{}={}:{}",
            self.resource.name,
            v(self.soft),
            v(self.hard)
        )
    }
}

/// Parses a size as docker's `--memory` does: a number of bytes with an optional `b`, `k`,
/// `m` or `g` suffix (binary units, case-insensitive).
///
/// # Errors
///
/// When the text is not such a size, or is zero.
pub fn parse_size(s: &str) -> Result<u64, ParseLimitError> {
    let err = |reason| ParseLimitError {
        what: "size",
        value: s.to_owned(),
        reason,
    };
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower
        .strip_suffix("ib")
        .map_or(lower.clone(), |l| format!("{l}b"));
    let (digits, shift) = match lower.trim_end_matches('b') {
        d if d.ends_with('k') => (&d[..d.len() - 1], 10),
        d if d.ends_with('m') => (&d[..d.len() - 1], 20),
        d if d.ends_with('g') => (&d[..d.len() - 1], 30),
        d if d.ends_with('t') => (&d[..d.len() - 1], 40),
        d => (d, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| err("expected a size like 512m, 2g or 1048576"))?;
    if n == 0 {
        return Err(err("must be greater than zero"));
    }
    n.checked_mul(1u64 << shift).ok_or_else(|| err("too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_parse_like_docker() {
        let u: Ulimit = "nofile=1024:2048".parse().unwrap();
        assert_eq!(u.resource.name(), "nofile");
        assert_eq!(u64::from(u.resource.resource()), libc::RLIMIT_NOFILE as u64);
        assert_eq!((u.soft, u.hard), (Some(1024), Some(2048)));
        let u: Ulimit = "core=0".parse().unwrap();
        assert_eq!((u.soft, u.hard), (Some(0), Some(0)));
        let u: Ulimit = "memlock=-1:unlimited".parse().unwrap();
        assert_eq!((u.soft, u.hard), (None, None));
        assert_eq!(u.to_string(), "memlock=-1:-1");
        for bad in [
            "nofile",
            "files=1",
            "nofile=x",
            "nofile=10:5",
            "nofile=-1:5",
        ] {
            assert!(bad.parse::<Ulimit>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("10kb").unwrap(), 10 << 10);
        for bad in ["", "m", "0", "1x", "-5m"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
