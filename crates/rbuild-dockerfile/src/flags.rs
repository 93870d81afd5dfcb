//! Instruction flags with BuildKit's `BFlags` rules: `--name` or `--name=value`; bool flags take
//! no value or `true`/`false`; string flags need `=`; list flags may repeat.

use std::collections::BTreeMap;

/// The kind of value a flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagType {
    Bool,
    String,
    Strings,
}

/// Flags of one instruction after validation.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    bools: BTreeMap<&'static str, bool>,
    strings: BTreeMap<&'static str, String>,
    lists: BTreeMap<&'static str, Vec<String>>,
}

impl Flags {
    /// Validates `args` (as `--name=value` words) against the flags `defs` allows.
    pub(crate) fn parse(
        args: &[String],
        defs: &[(&'static str, FlagType)],
    ) -> Result<Self, String> {
        let mut out = Flags::default();
        let mut used: Vec<&str> = Vec::new();
        for arg in args {
            let Some(body) = arg.strip_prefix("--") else {
                return Err(format!("arg should start with -- : {arg}"));
            };
            if body.is_empty() {
                break;
            }
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(def, ty)) = defs.iter().find(|(n, _)| *n == name) else {
                return Err(format!("unknown flag: {name}"));
            };
            if used.contains(&def) && ty != FlagType::Strings {
                return Err(format!("duplicate flag specified: {name}"));
            }
            used.push(def);
            match ty {
                FlagType::Bool => {
                    let v = match value {
                        None => true,
                        Some("") => return Err(format!("missing a value on flag: {name}")),
                        Some(v) if v.eq_ignore_ascii_case("true") => true,
                        Some(v) if v.eq_ignore_ascii_case("false") => false,
                        Some(v) => {
                            return Err(format!(
                                "expecting boolean value for flag {name}, not: {v}"
                            ));
                        }
                    };
                    out.bools.insert(def, v);
                }
                FlagType::String => {
                    let Some(v) = value else {
                        return Err(format!("missing a value on flag: {name}"));
                    };
                    out.strings.insert(def, v.to_string());
                }
                FlagType::Strings => {
                    let Some(v) = value else {
                        return Err(format!("missing a value on flag: {name}"));
                    };
                    out.lists.entry(def).or_default().push(v.to_string());
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn string(&self, name: &str) -> Option<String> {
        self.strings.get(name).cloned()
    }

    pub(crate) fn boolean(&self, name: &str) -> Option<bool> {
        self.bools.get(name).copied()
    }

    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.lists.get(name).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFS: &[(&str, FlagType)] = &[
        ("from", FlagType::String),
        ("link", FlagType::Bool),
        ("exclude", FlagType::Strings),
    ];

    fn p(args: &[&str]) -> Result<Flags, String> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Flags::parse(&v, DEFS)
    }

    #[test]
    fn values_by_type() {
        let f = p(&["--from=a", "--link", "--exclude=x", "--exclude=y"]).unwrap();
        assert_eq!(f.string("from").as_deref(), Some("a"));
        assert_eq!(f.boolean("link"), Some(true));
        assert_eq!(f.list("exclude"), ["x", "y"]);
        assert_eq!(p(&["--link=FALSE"]).unwrap().boolean("link"), Some(false));
        assert_eq!(p(&["--from="]).unwrap().string("from").as_deref(), Some(""));
    }

    #[test]
    fn errors_like_buildkit() {
        assert_eq!(p(&["--nope=1"]).err().unwrap(), "unknown flag: nope");
        assert_eq!(
            p(&["--from=a", "--from=b"]).err().unwrap(),
            "duplicate flag specified: from"
        );
        assert_eq!(
            p(&["--from"]).err().unwrap(),
            "missing a value on flag: from"
        );
        assert_eq!(
            p(&["--link="]).err().unwrap(),
            "missing a value on flag: link"
        );
        assert_eq!(
            p(&["--link=yes"]).err().unwrap(),
            "expecting boolean value for flag link, not: yes"
        );
    }
}
