//! `RUN --mount=…` values (BuildKit `commands_runmount.go`): a CSV list of `key=value` fields.

use serde::Serialize;

/// The kind of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// Bind a directory of the context or of another stage (the default).
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A build secret as a file (or an environment variable).
    Secret,
    /// An SSH agent socket.
    Ssh,
}

/// Sharing mode of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Concurrent writers share the directory (the default).
    Shared,
    /// Each concurrent writer gets its own directory.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// One `RUN --mount` after parsing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// The value as written after `--mount=`.
    pub raw: String,
    /// `type=`.
    #[serde(rename = "type")]
    pub kind: MountType,
    /// `from=`: stage or image to take the source from.
    pub from: Option<String>,
    /// `source=`/`src=`.
    pub source: Option<String>,
    /// `target=`/`dst=`/`destination=`.
    pub target: Option<String>,
    /// Read-only: explicit `ro`/`rw`, else true for bind, secret and ssh mounts.
    pub read_only: bool,
    /// `id=`: cache, secret or ssh id.
    pub id: Option<String>,
    /// `sharing=` (cache mounts).
    pub sharing: Option<Sharing>,
    /// `required` (secret and ssh mounts).
    pub required: bool,
    /// `mode=` (octal).
    pub mode: Option<u32>,
    /// `uid=`.
    pub uid: Option<u32>,
    /// `gid=`.
    pub gid: Option<u32>,
    /// `size=` of a tmpfs, in bytes.
    pub size: Option<u64>,
    /// `env=`: expose a secret as this environment variable.
    pub env: Option<String>,
}

/// Splits one CSV record the way Go `encoding/csv` reads it (quotes only at a field start, `""`
/// inside quotes for a quote).
fn csv_fields(val: &str) -> Result<Vec<String>, String> {
    if val.is_empty() {
        return Err("EOF".into());
    }
    let chars: Vec<char> = val.chars().collect();
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let mut field = String::new();
        if chars.get(i) == Some(&'"') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(format!(
                            "parse error on line 1, column {}: extraneous or missing \" in quoted-field",
                            chars.len() + 1
                        ));
                    }
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        field.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        field.push(c);
                        i += 1;
                    }
                }
            }
            match chars.get(i) {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {
                    fields.push(field);
                    i += 1;
                }
                Some(_) => {
                    return Err(format!(
                        "parse error on line 1, column {}: extraneous or missing \" in quoted-field",
                        i + 1
                    ));
                }
            }
        } else {
            while let Some(&c) = chars.get(i) {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err(format!(
                        "parse error on line 1, column {}: bare \" in non-quoted-field",
                        i + 1
                    ));
                }
                field.push(c);
                i += 1;
            }
            let end = i >= chars.len();
            fields.push(field);
            if end {
                return Ok(fields);
            }
            i += 1;
        }
    }
}

/// docker/go-units `RAMInBytes`: `64m`, `1.5GiB`, `512` (binary multiples).
fn ram_in_bytes(s: &str) -> Option<u64> {
    let t = s.trim_end_matches(['b', 'B']);
    let t = t.strip_suffix(['i', 'I']).unwrap_or(t);
    let (num, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (t[..i].trim_end_matches(' '), Some(c)),
        _ => (t, None),
    };
    let mult: u64 = match unit.map(|c| c.to_ascii_lowercase()) {
        None => 1,
        Some('k') => 1 << 10,
        Some('m') => 1 << 20,
        Some('g') => 1 << 30,
        Some('t') => 1 << 40,
        Some('p') => 1 << 50,
        Some(_) => return None,
    };
    if num.is_empty()
        || !num.chars().all(|c| c.is_ascii_digit() || c == '.')
        || num.starts_with('.')
    {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    Some((n * mult as f64) as u64)
}

/// A bind mount that only records `raw`: stands for a mount whose values use variables until
/// [`crate::Instruction::expand`] parses it for real.
pub(crate) fn placeholder(raw: &str) -> Mount {
    Mount {
        raw: raw.to_string(),
        kind: MountType::Bind,
        from: None,
        source: None,
        target: None,
        read_only: false,
        id: None,
        sharing: None,
        required: false,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        env: None,
    }
}

/// Parses one `--mount` value; `expand` is applied to every value first (BuildKit's expander).
pub(crate) fn parse_mount(
    val: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<Mount, String> {
    let fields = csv_fields(val).map_err(|e| format!("failed to parse csv mounts: {e}"))?;
    let mut m = placeholder(val);
    let mut ro_auto = true;
    let parse_bool = |key: &str, v: &str| -> Result<bool, String> {
        // Go strconv.ParseBool.
        match v {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
            _ => Err(format!("invalid value for {key}: {v}")),
        }
    };
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => m.read_only = true,
                "readwrite" | "rw" => m.read_only = false,
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true
                }
                "required" => {
                    return Err(format!(
                        "unexpected key '{key}' for mount type '{}'",
                        name(m.kind)
                    ));
                }
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            if key != "required" {
                ro_auto = false;
            }
            continue;
        };
        let value = expand(value)?;
        match key.as_str() {
            "type" => {
                m.kind = match value.to_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => return Err(format!("unsupported mount type {value:?}")),
                }
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                m.read_only = parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.read_only = !parse_bool(&key, &value)?;
                ro_auto = false;
            }
            "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                m.required = parse_bool(&key, &value)?;
            }
            "size" if m.kind == MountType::Tmpfs => {
                m.size = Some(
                    ram_in_bytes(&value)
                        .ok_or_else(|| format!("invalid value for {key}: {value}"))?,
                );
            }
            "env" if m.kind == MountType::Secret => m.env = Some(value),
            "required" | "size" | "env" => {
                return Err(format!(
                    "unexpected key '{key}' for mount type '{}'",
                    name(m.kind)
                ));
            }
            "id" => m.id = Some(value),
            "sharing" => {
                m.sharing = Some(match value.to_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => return Err(format!("unsupported sharing value {value:?}")),
                })
            }
            "mode" => {
                m.mode = Some(
                    u32::from_str_radix(&value, 8)
                        .map_err(|_| format!("invalid value {value} for mode"))?,
                )
            }
            "uid" => {
                m.uid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value} for uid"))?,
                )
            }
            "gid" => {
                m.gid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value} for gid"))?,
                )
            }
            _ => return Err(format!("unexpected key '{key}' in '{field}'")),
        }
    }
    validate(&mut m, ro_auto)?;
    Ok(m)
}

fn name(k: MountType) -> &'static str {
    match k {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    }
}

fn validate(m: &mut Mount, ro_auto: bool) -> Result<(), String> {
    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        for (set, what) in [
            (m.mode.is_some(), "mode"),
            (m.uid.is_some(), "uid"),
            (m.gid.is_some(), "gid"),
        ] {
            if set {
                return Err(format!(
                    "{what} not allowed for {:?} type mounts",
                    name(m.kind)
                ));
            }
        }
    }
    if ro_auto {
        m.read_only = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err("secret mount should not have a from".into());
        }
        if m.sharing.is_some() {
            return Err("secret mount should not define sharing".into());
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() && m.env.is_none() {
            return Err("invalid secret mount. one of source, target required".into());
        }
        if m.source.is_some() && m.id.is_some() {
            return Err("both source and id can't be set".into());
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(format!(
            "invalid cache sharing set for {} mount",
            name(m.kind)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Mount, String> {
        parse_mount(s, &mut |v| Ok(v.to_string()))
    }

    #[test]
    fn cache_mount() {
        let m = p("type=cache,target=/root/.cache,id=pip,sharing=locked,mode=0755,uid=1").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.sharing, Some(Sharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert!(!m.read_only);
    }

    #[test]
    fn bind_defaults_read_only() {
        let m = p("target=/src,from=build,source=/out").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.read_only);
        assert!(!p("type=bind,target=/src,rw").unwrap().read_only);
    }

    #[test]
    fn secret_ssh_tmpfs() {
        let s = p("type=secret,id=npm,target=/root/.npmrc,required").unwrap();
        assert!(s.required);
        assert!(s.read_only);
        assert!(p("type=secret").is_err());
        assert!(p("type=ssh,required=true").unwrap().required);
        assert_eq!(
            p("type=tmpfs,target=/t,size=64m").unwrap().size,
            Some(64 << 20)
        );
    }

    #[test]
    fn errors() {
        assert_eq!(p("type=nfs").unwrap_err(), "unsupported mount type \"nfs\"");
        assert_eq!(
            p("target=/x,foo=1").unwrap_err(),
            "unexpected key 'foo' in 'foo=1'"
        );
        assert_eq!(
            p("target").unwrap_err(),
            "invalid field 'target' must be a key=value pair"
        );
        assert_eq!(
            p("type=bind,mode=0700").unwrap_err(),
            "mode not allowed for \"bind\" type mounts"
        );
        assert_eq!(
            p("type=bind,required").unwrap_err(),
            "unexpected key 'required' for mount type 'bind'"
        );
        assert!(p("").unwrap_err().starts_with("failed to parse csv mounts"));
        assert_eq!(
            p("type=bind,sharing=shared").unwrap_err(),
            "invalid cache sharing set for bind mount"
        );
    }

    #[test]
    fn csv_quotes() {
        assert_eq!(csv_fields("\"a,b\",c").unwrap(), ["a,b", "c"]);
        assert_eq!(csv_fields("a,\"x\"\"y\"").unwrap(), ["a", "x\"y"]);
        assert!(csv_fields("a\"b").is_err());
        assert_eq!(ram_in_bytes("1.5GiB"), Some(3 << 29));
        assert_eq!(ram_in_bytes("512"), Some(512));
        assert_eq!(ram_in_bytes("x"), None);
    }
}
