//! HEALTHCHECK (BuildKit `parseHealthcheck`): `NONE`, or `CMD` with Go-duration flags.

use std::time::Duration;

use serde::Serialize;

use crate::command::{Command, command_of};
use crate::error::ErrorKind;
use crate::flags::{FlagType, Flags};
use crate::gostr::go_quote;
use crate::node::Node;

/// What a HEALTHCHECK runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthTest {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK CMD …`.
    Cmd(Command),
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// The test.
    pub test: HealthTest,
    /// `--interval`.
    pub interval: Option<Duration>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--start-period`.
    pub start_period: Option<Duration>,
    /// `--start-interval`.
    pub start_interval: Option<Duration>,
    /// `--retries`.
    pub retries: Option<u32>,
}

/// Go `time.ParseDuration`, for the HEALTHCHECK intervals; negative values are reported as
/// such (they are below BuildKit's minimum anyway).
fn parse_go_duration(s: &str) -> Result<(bool, Duration), String> {
    let invalid = || format!("time: invalid duration {}", go_quote(s));
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok((neg, Duration::ZERO));
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..n];
        if num.is_empty() || num == "." {
            return Err(invalid());
        }
        let v: f64 = num.parse().map_err(|_| invalid())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..u];
        rest = &rest[u..];
        let mult = match unit {
            "" => {
                return Err(format!("time: missing unit in duration {}", go_quote(s)));
            }
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(u),
                    go_quote(s)
                ));
            }
        };
        total += v * mult;
    }
    Duration::try_from_secs_f64(total)
        .map(|d| (neg, d))
        .map_err(|_| invalid())
}

fn interval(flags: &Flags, name: &str) -> Result<Option<Duration>, String> {
    let Some(s) = flags.string(name).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let (neg, d) = parse_go_duration(&s)?;
    if d.is_zero() {
        return Ok(Some(d));
    }
    // Docker's `container.MinimumDuration` is one millisecond.
    if neg || d < Duration::from_millis(1) {
        return Err(format!("Interval \"{name}\" cannot be less than 1ms"));
    }
    Ok(Some(d))
}

pub(crate) fn parse_healthcheck(node: &Node, args: &[String]) -> Result<Healthcheck, ErrorKind> {
    let syn = ErrorKind::Syntax;
    let Some((typ, rest)) = args.split_first() else {
        return Err(syn("HEALTHCHECK requires at least one argument".into()));
    };
    let typ = typ.to_uppercase();
    let none = Healthcheck {
        test: HealthTest::None,
        interval: None,
        timeout: None,
        start_period: None,
        start_interval: None,
        retries: None,
    };
    if typ == "NONE" {
        // BuildKit does not look at the flags of HEALTHCHECK NONE.
        if !rest.is_empty() {
            return Err(syn("HEALTHCHECK NONE takes no arguments".into()));
        }
        return Ok(none);
    }
    let f = Flags::parse(
        &node.flags,
        &[
            ("interval", FlagType::String),
            ("timeout", FlagType::String),
            ("start-period", FlagType::String),
            ("start-interval", FlagType::String),
            ("retries", FlagType::String),
        ],
    )
    .map_err(ErrorKind::Flag)?;
    if typ != "CMD" {
        return Err(syn(format!(
            "Unknown type \"{typ}\" in HEALTHCHECK (try CMD)"
        )));
    }
    if rest.is_empty() {
        return Err(syn("Missing command after HEALTHCHECK CMD".into()));
    }
    let retries = match f.string("retries").filter(|r| !r.is_empty()) {
        None => None,
        Some(r) => {
            let n: i64 = r
                .parse()
                .ok()
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or_else(|| {
                    syn(format!(
                        "strconv.ParseInt: parsing {}: invalid syntax",
                        go_quote(&r)
                    ))
                })?;
            if n < 0 {
                return Err(syn(format!("--retries cannot be negative ({n})")));
            }
            u32::try_from(n).ok()
        }
    };
    Ok(Healthcheck {
        test: HealthTest::Cmd(command_of(node, rest.to_vec())),
        interval: interval(&f, "interval").map_err(syn)?,
        timeout: interval(&f, "timeout").map_err(syn)?,
        start_period: interval(&f, "start-period").map_err(syn)?,
        start_interval: interval(&f, "start-interval").map_err(syn)?,
        retries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_go_duration("1m30s").unwrap().1,
            Duration::from_secs(90)
        );
        assert_eq!(
            parse_go_duration("1.5h").unwrap().1,
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("250ms").unwrap().1,
            Duration::from_millis(250)
        );
        assert_eq!(parse_go_duration("0").unwrap().1, Duration::ZERO);
        assert_eq!(
            parse_go_duration("10").unwrap_err(),
            "time: missing unit in duration \"10\""
        );
        assert_eq!(
            parse_go_duration("3x").unwrap_err(),
            "time: unknown unit \"x\" in duration \"3x\""
        );
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("-1s").unwrap().0);
    }
}
