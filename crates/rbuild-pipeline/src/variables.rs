//! CI/CD variables: layering, masking and `$VAR` / `${VAR}` / `$$` expansion.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::error::{Error, Result};

/// One variable as GitLab defines it: a name, a raw value and how to treat it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// `[A-Za-z0-9_]+`.
    pub name: String,
    /// The value before expansion.
    pub value: String,
    /// `false` for `expand: false`: the value is taken literally, `$` included.
    pub expand: bool,
    /// Secret: the value is replaced by `[MASKED]` in job output.
    pub masked: bool,
}

impl Variable {
    /// A plain, expandable, unmasked variable (a `variables:` entry).
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            expand: true,
            masked: false,
        }
    }

    /// A secret variable (`--var`, `--var-file`, taken from the environment): masked in output.
    pub fn secret(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            masked: true,
            ..Self::new(name, value)
        }
    }

    /// The same variable with `expand` set (`expand: false` in YAML keeps `$` literal).
    #[must_use]
    pub fn with_expand(mut self, expand: bool) -> Self {
        self.expand = expand;
        self
    }
}

/// An ordered set of variables; a later definition of a name overrides an earlier one.
///
/// Layers are pushed in GitLab's precedence order (lowest first): predefined, global
/// `variables:`, job `variables:`, `rules:variables`, then secret/pipeline variables
/// (<https://docs.gitlab.com/ee/ci/variables/#cicd-variable-precedence>).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variables {
    vars: Vec<Variable>,
}

impl Variables {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or overrides a variable, keeping the position of the first definition.
    pub fn push(&mut self, var: Variable) {
        if let Some(existing) = self.vars.iter_mut().find(|v| v.name == var.name) {
            // A masked value stays masked even if a later layer redefines the name: the old
            // value may still show up in output (e.g. printed by an earlier step).
            let masked = existing.masked || var.masked;
            *existing = Variable { masked, ..var };
        } else {
            self.vars.push(var);
        }
    }

    /// Adds or overrides a plain variable.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.push(Variable::new(name, value));
    }

    /// Pushes every variable of `other` on top of this set.
    pub fn extend(&mut self, other: &Variables) {
        for v in &other.vars {
            self.push(v.clone());
        }
    }

    /// The raw (unexpanded) value of a variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.value.as_str())
    }

    /// The variables in definition order.
    pub fn iter(&self) -> impl Iterator<Item = &Variable> {
        self.vars.iter()
    }

    /// Number of variables.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The values to hide in job output (those of masked variables), non-empty only.
    pub fn masked_values(&self) -> Vec<String> {
        self.vars
            .iter()
            .filter(|v| v.masked && !v.value.is_empty())
            .map(|v| v.value.clone())
            .collect()
    }

    /// Expands every variable against the others, as the runner does before a job starts.
    ///
    /// `$NAME` and `${NAME}` take the referenced variable's own expanded value (so nesting
    /// works to any depth), an undefined name expands to the empty string, `$$` is a literal
    /// `$`, and an `expand: false` variable keeps its raw value.
    ///
    /// # Errors
    ///
    /// [`Error::CircularVariable`] if variables refer to each other in a cycle (GitLab refuses
    /// those as well: "circular variable reference detected").
    pub fn expand_all(&self) -> Result<BTreeMap<String, String>> {
        let raw: HashMap<&str, &Variable> =
            self.vars.iter().map(|v| (v.name.as_str(), v)).collect();
        let mut done: HashMap<String, String> = HashMap::new();
        for v in &self.vars {
            let mut stack = Vec::new();
            resolve(&v.name, &raw, &mut done, &mut stack)?;
        }
        Ok(done.into_iter().collect())
    }
}

/// Parses a variables file (`--var-file`): `KEY=VALUE` lines, `#` comments and blank lines
/// ignored, an optional `export ` prefix, values optionally in single quotes (literal) or
/// double quotes (`\n`, `\"` and `\\` unescaped), as dotenv files write them. Every variable is
/// a secret (masked).
///
/// `path` names the file in errors.
///
/// # Errors
///
/// [`Error::VarFile`] with the file and 1-based line that is not `KEY=VALUE` with a valid name.
pub fn parse_var_file(text: &str, path: &Path) -> Result<Variables> {
    let err = |line: usize, message: String| Error::VarFile {
        path: path.to_owned(),
        line,
        message,
    };
    let mut vars = Variables::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(i + 1, "expected KEY=VALUE".to_owned()));
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(err(i + 1, format!("invalid variable name {key:?}")));
        }
        let value = value.trim();
        let value = if let Some(v) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            v.to_owned()
        } else if let Some(v) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            unescape_double_quoted(v)
        } else {
            value.to_owned()
        };
        // A file's values are data, not templates: no `$` expansion.
        vars.push(Variable::secret(key, value).with_expand(false));
    }
    Ok(vars)
}

fn unescape_double_quoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn resolve(
    name: &str,
    raw: &HashMap<&str, &Variable>,
    done: &mut HashMap<String, String>,
    stack: &mut Vec<String>,
) -> Result<String> {
    if let Some(v) = done.get(name) {
        return Ok(v.clone());
    }
    let Some(var) = raw.get(name) else {
        return Ok(String::new());
    };
    if !var.expand {
        done.insert(name.to_owned(), var.value.clone());
        return Ok(var.value.clone());
    }
    if stack.iter().any(|s| s == name) {
        let mut chain = stack.clone();
        chain.push(name.to_owned());
        return Err(Error::CircularVariable {
            chain: chain.join(" -> "),
        });
    }
    stack.push(name.to_owned());
    let mut failure = None;
    let value = expand_with(&var.value, |n| {
        if failure.is_some() {
            return None;
        }
        match resolve(n, raw, done, stack) {
            Ok(v) => Some(v),
            Err(e) => {
                failure = Some(e);
                None
            }
        }
    });
    stack.pop();
    if let Some(e) = failure {
        return Err(e);
    }
    done.insert(name.to_owned(), value.clone());
    Ok(value)
}

/// Expands `$NAME`, `${NAME}` and `$$` in `text`, asking `lookup` for each name.
///
/// A name the lookup does not know becomes the empty string (GitLab's behaviour for
/// `image:`, `environment:name` and variable values). A `$` not followed by a name, `{` or `$`
/// is kept, as is an unterminated `${`.
pub fn expand_with(text: &str, mut lookup: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    while i < bytes.len() {
        if bytes[i] != b'$' {
            // Copy up to the next `$` in one go; `$` is ASCII so slicing there is safe.
            let next = text[i..].find('$').map_or(bytes.len(), |p| i + p);
            out.push_str(&text[i..next]);
            i = next;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(b'{') => match text[i + 2..].find('}') {
                Some(end) if text[i + 2..i + 2 + end].bytes().all(is_name) && end > 0 => {
                    let name = &text[i + 2..i + 2 + end];
                    out.push_str(&lookup(name).unwrap_or_default());
                    i += 3 + end;
                }
                _ => {
                    out.push('$');
                    i += 1;
                }
            },
            Some(b) if is_name(*b) => {
                let len = bytes[i + 1..].iter().take_while(|b| is_name(**b)).count();
                let name = &text[i + 1..i + 1 + len];
                out.push_str(&lookup(name).unwrap_or_default());
                i += 1 + len;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    out
}

/// Expands `text` against already expanded values (see [`Variables::expand_all`]).
pub fn expand(text: &str, values: &BTreeMap<String, String>) -> String {
    expand_with(text, |n| values.get(n).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> Variables {
        let mut v = Variables::new();
        for (k, val) in pairs {
            v.set(*k, *val);
        }
        v
    }

    #[test]
    fn nested_expansion_resolves_any_order() {
        // The seed's shape: REGISTRY_IMAGE uses REGISTRY_HOST (defined before) and
        // CI_PROJECT_NAME (defined in another layer); order of definition must not matter.
        let mut v = set(&[
            (
                "REGISTRY_IMAGE",
                "${REGISTRY_HOST}/${GOOGLE_PROJECT_ID}/${CI_PROJECT_NAME}/$CI_PROJECT_NAME",
            ),
            ("REGISTRY_HOST", "eu.gcr.io"),
        ]);
        v.push(Variable::secret("GOOGLE_PROJECT_ID", "adtech"));
        v.set("CI_PROJECT_NAME", "gotthard");
        let out = v.expand_all().unwrap();
        assert_eq!(out["REGISTRY_IMAGE"], "eu.gcr.io/adtech/gotthard/gotthard");
    }

    #[test]
    fn dollar_dollar_is_literal_and_not_reexpanded() {
        let v = set(&[("A", "$$HOME and $${B}"), ("B", "x"), ("C", "[$A]")]);
        let out = v.expand_all().unwrap();
        assert_eq!(out["A"], "$HOME and ${B}");
        // C takes A's final value; the `$` it contains is not expanded a second time.
        assert_eq!(out["C"], "[$HOME and ${B}]");
    }

    #[test]
    fn expand_false_keeps_raw_value() {
        let mut v = set(&[("B", "bee")]);
        v.push(Variable::new("RAW", "$B-${B}-$$").with_expand(false));
        v.set("USES_RAW", "<$RAW>");
        let out = v.expand_all().unwrap();
        assert_eq!(out["RAW"], "$B-${B}-$$");
        assert_eq!(out["USES_RAW"], "<$B-${B}-$$>");
    }

    #[test]
    fn undefined_is_empty_and_odd_dollars_stay() {
        let v = set(&[("A", "x${NOPE}y$NOPE2 cost: 5$ ${not closed $ {x} ${}")]);
        assert_eq!(
            v.expand_all().unwrap()["A"],
            "xy cost: 5$ ${not closed $ {x} ${}"
        );
    }

    #[test]
    fn later_layer_overrides_and_masking_sticks() {
        let mut v = Variables::new();
        v.push(Variable::secret("TOKEN", "s3cr3t-value"));
        v.set("TOKEN", "other");
        assert_eq!(v.get("TOKEN"), Some("other"));
        assert_eq!(v.masked_values(), vec!["other".to_owned()]);
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn var_file_forms() {
        let v = parse_var_file(
            "# comment\n\nexport A=1\nB = 'x $y'\nC=\"l1\\nl2 \\\"q\\\"\"\nD=\n",
            Path::new("vars.env"),
        )
        .unwrap();
        let got: Vec<_> = v
            .iter()
            .map(|v| (v.name.as_str(), v.value.as_str(), v.masked, v.expand))
            .collect();
        assert_eq!(
            got,
            [
                ("A", "1", true, false),
                ("B", "x $y", true, false),
                ("C", "l1\nl2 \"q\"", true, false),
                ("D", "", true, false)
            ]
        );
        let file = Path::new("ci/vars.env");
        assert_eq!(
            parse_var_file("ok=1\nnot a pair\n", file)
                .unwrap_err()
                .to_string(),
            "ci/vars.env:2: expected KEY=VALUE"
        );
        assert_eq!(
            parse_var_file("# c\nBAD-NAME=1", file)
                .unwrap_err()
                .to_string(),
            "ci/vars.env:2: invalid variable name \"BAD-NAME\""
        );
    }

    #[test]
    fn cycle_is_an_error_naming_the_chain() {
        let v = set(&[("A", "$B"), ("B", "${C}"), ("C", "$A")]);
        let err = v.expand_all().unwrap_err();
        assert_eq!(
            err.to_string(),
            "circular variable reference: A -> B -> C -> A"
        );
    }

    #[test]
    fn self_reference_to_outer_layer_is_a_cycle_too() {
        // GitLab has no "previous value" semantics: PATH: "$PATH:/x" within one set is a cycle.
        let v = set(&[("P", "$P:/x")]);
        assert!(matches!(
            v.expand_all(),
            Err(Error::CircularVariable { .. })
        ));
    }
}
