//! Reading `.gitlab-ci.yml` into one resolved YAML mapping.
//!
//! The order follows GitLab's config pipeline (`Gitlab::Ci::Config`): parse each file (YAML
//! anchors, aliases and `<<` merge keys are resolved here, per file: anchors never cross
//! includes), merge `include: local` files under the main one, expand `extends`, then resolve
//! `!reference` tags.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use crate::error::{Error, Result};

/// Upstream limit for `!reference` nesting and `extends` depth (`MAX_NESTING_LEVELS` = 10,
/// `Config::Extendable::Entry::MAX_NESTING_LEVELS` = 10 + the job itself).
const MAX_NESTING: usize = 10;

/// A source file that contributed to the configuration, kept for line lookups.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// The merged configuration and its sources (main file first).
#[derive(Debug)]
pub(crate) struct Loaded {
    pub root: Mapping,
    pub sources: Vec<Source>,
    /// Messages about `include:` kinds that were ignored.
    pub ignored_includes: Vec<String>,
}

impl Loaded {
    /// File and 1-based line where a top-level key (a job) is defined; line 0 if not found.
    pub(crate) fn locate(&self, key: &str) -> (PathBuf, usize) {
        for s in &self.sources {
            if let Some(line) = find_key_line(&s.text, key) {
                return (s.path.clone(), line);
            }
        }
        (
            self.sources
                .first()
                .map(|s| s.path.clone())
                .unwrap_or_default(),
            0,
        )
    }

    /// An [`Error::Invalid`] located at a top-level key.
    pub(crate) fn invalid(&self, key: &str, message: String) -> Error {
        let (path, line) = self.locate(key);
        Error::Invalid {
            path,
            line,
            key: key.to_owned(),
            message,
        }
    }
}

/// Finds the line of a top-level `key:` (plain or quoted) in YAML text.
pub(crate) fn find_key_line(text: &str, key: &str) -> Option<usize> {
    let candidates = [
        format!("{key}:"),
        format!("\"{key}\":"),
        format!("'{key}':"),
    ];
    text.lines()
        .position(|l| candidates.iter().any(|c| l.starts_with(c.as_str())))
        .map(|i| i + 1)
}

/// Parses one YAML text into a mapping with anchors and `<<` merges applied.
pub(crate) fn parse(text: &str, path: &Path) -> Result<Mapping> {
    let mut value: Value = serde_yaml::from_str(text).map_err(|source| {
        let (line, column) = source.location().map_or((0, 0), |l| (l.line(), l.column()));
        Error::ParseYaml {
            path: path.to_owned(),
            line,
            column,
            source,
        }
    })?;
    value.apply_merge().map_err(|source| {
        let (line, column) = source.location().map_or((0, 0), |l| (l.line(), l.column()));
        Error::ParseYaml {
            path: path.to_owned(),
            line,
            column,
            source,
        }
    })?;
    match value {
        Value::Mapping(m) => Ok(m),
        Value::Null => Ok(Mapping::new()),
        _ => Err(Error::Invalid {
            path: path.to_owned(),
            line: 1,
            key: String::new(),
            message: "the pipeline file must be a mapping of keywords and jobs".into(),
        }),
    }
}

/// Loads `text` (the content of `path`) with its local includes resolved against
/// `project_dir`; `include:rules` are evaluated against `variables`.
pub(crate) fn load(
    text: &str,
    path: &Path,
    project_dir: &Path,
    variables: &BTreeMap<String, String>,
) -> Result<Loaded> {
    let mut loaded = Loaded {
        root: Mapping::new(),
        sources: Vec::new(),
        ignored_includes: Vec::new(),
    };
    let mut visiting = BTreeSet::new();
    let project = Project {
        dir: project_dir,
        variables,
    };
    let root = load_file(text, path, &project, &mut loaded, &mut visiting, 0)?;
    loaded.root = root;
    // Reorder so the main file is searched first for line numbers.
    if let Some(pos) = loaded.sources.iter().position(|s| s.path == path) {
        let main = loaded.sources.remove(pos);
        loaded.sources.insert(0, main);
    }
    // GitLab's order (`Gitlab::Ci::Config#build_config`): includes are merged, then `extends`
    // is expanded, then `!reference` tags are resolved, so a reference may name a key that a
    // template only has through `extends`.
    resolve_extends(&mut loaded)?;
    resolve_references(&mut loaded)?;
    Ok(loaded)
}

/// Where includes come from and what their rules see.
struct Project<'a> {
    dir: &'a Path,
    variables: &'a BTreeMap<String, String>,
}

fn load_file(
    text: &str,
    path: &Path,
    project: &Project<'_>,
    loaded: &mut Loaded,
    visiting: &mut BTreeSet<PathBuf>,
    depth: usize,
) -> Result<Mapping> {
    loaded.sources.push(Source {
        path: path.to_owned(),
        text: text.to_owned(),
    });
    let mut own = parse(text, path)?;
    let Some(include) = own.remove("include") else {
        return Ok(own);
    };
    let invalid = |message: String| Error::Invalid {
        path: path.to_owned(),
        line: find_key_line(text, "include").unwrap_or(0),
        key: "include".to_owned(),
        message,
    };
    if depth >= 150 {
        return Err(invalid("more than 150 nested includes".into()));
    }
    let entries = match include {
        Value::Sequence(s) => s,
        other => vec![other],
    };
    let root = crate::run::rooted::open_root(project.dir).map_err(|source| Error::ReadFile {
        path: project.dir.to_owned(),
        source,
    })?;
    let mut merged = Mapping::new();
    for entry in entries {
        let local = match &entry {
            Value::String(s) if s.starts_with("http://") || s.starts_with("https://") => {
                return Err(invalid(offline(&format!("remote: {s}"))));
            }
            Value::String(s) => s.clone(),
            Value::Mapping(m) => {
                if let Some(rules) = m.get("rules") {
                    let included = include_rules_match(rules, project)
                        .map_err(|m| invalid(format!("include: rules: {m}")))?;
                    if !included {
                        continue;
                    }
                }
                match m.get("local").and_then(Value::as_str) {
                    Some(s) => s.to_owned(),
                    None => {
                        let what = ["remote", "project", "template", "component"]
                            .iter()
                            .find_map(|k| {
                                m.get(*k)
                                    .map(|v| format!("{k}: {}", v.as_str().unwrap_or("...")))
                            });
                        return Err(invalid(match what {
                            Some(what) => offline(&what),
                            None => "an `include` entry needs `local`, `remote`, `project`, \
                                     `template` or `component`"
                                .into(),
                        }));
                    }
                }
            }
            _ => {
                return Err(invalid(
                    "`include` entries are paths or `{local: path}`".into(),
                ));
            }
        };
        // GitLab resolves local includes from the repository root; a leading `/` is optional.
        let rel = local.trim_start_matches('/');
        let files: Vec<PathBuf> = if rel.contains('*') {
            // `include: 'ci/*.yml'`: every matching file, in path order (GitLab's
            // `Gitlab::Ci::Config::External::Mapper::Matcher` wildcard locals).
            let resolved = crate::run::artifacts::resolve_paths(project.dir, &[rel.to_owned()])
                .map_err(|source| Error::ReadFile {
                    path: project.dir.join(rel),
                    source,
                })?;
            let mut found: Vec<PathBuf> =
                resolved.found.into_iter().filter(|p| is_yaml(p)).collect();
            found.sort();
            if found.is_empty() {
                return Err(invalid(format!(
                    "include: no file in the project matches `{local}`"
                )));
            }
            found
        } else {
            if !is_yaml(Path::new(rel)) {
                return Err(invalid(format!(
                    "included file `{local}` does not have a YAML extension (.yml or .yaml)"
                )));
            }
            vec![PathBuf::from(rel)]
        };
        for rel in files {
            let file = project.dir.join(&rel);
            if !visiting.insert(file.clone()) {
                return Err(invalid(format!(
                    "include of {} forms a cycle",
                    rel.display()
                )));
            }
            // Read through a descriptor under the project: an include that is (or passes
            // through) a symlink out of the project is refused.
            let sub_text =
                crate::run::rooted::read_beneath(root.as_fd(), &rel).map_err(|source| {
                    Error::ReadFile {
                        path: file.clone(),
                        source,
                    }
                })?;
            let sub = load_file(&sub_text, &file, project, loaded, visiting, depth + 1)?;
            visiting.remove(&file);
            deep_merge(&mut merged, sub);
        }
    }
    // The including file wins over what it includes (GitLab: "deep merge, the main file takes
    // precedence").
    deep_merge(&mut merged, own);
    Ok(merged)
}

/// Why an include that needs the network or a GitLab server is refused, and what to do.
fn offline(what: &str) -> String {
    format!(
        "include `{what}` cannot be resolved offline: rbuild reads `local` includes only; \
         copy the file into the project and include it with `local:`"
    )
}

fn is_yaml(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "yml" || e == "yaml")
}

/// `include:rules`: the first rule whose `if` and `exists` hold decides; `when: never` (or no
/// matching rule) leaves the file out. Only `if`, `exists` and `when` are allowed there, as in
/// GitLab (`Entry::Include::Rules::Rule`).
fn include_rules_match(rules: &Value, project: &Project<'_>) -> std::result::Result<bool, String> {
    let Value::Sequence(list) = rules else {
        return Err("`rules` must be a list".into());
    };
    let lookup = |n: &str| project.variables.get(n).cloned();
    for rule in list {
        let Value::Mapping(m) = rule else {
            return Err("each rule is a mapping (`- if: ...`)".into());
        };
        let mut matched = true;
        let mut when = "always".to_owned();
        for (k, v) in m {
            match k.as_str().unwrap_or_default() {
                "if" => {
                    let text = v.as_str().ok_or("`if` must be a string")?;
                    let expr = crate::expr::Expr::parse(text).map_err(|e| e.to_string())?;
                    matched &= expr.eval(&lookup);
                }
                "exists" => {
                    let patterns: Vec<String> = match v {
                        Value::Sequence(s) => s
                            .iter()
                            .map(|p| p.as_str().map(str::to_owned))
                            .collect::<Option<_>>()
                            .ok_or("`exists` must be a list of paths")?,
                        Value::String(p) => vec![p.clone()],
                        _ => return Err("`exists` must be a list of paths".into()),
                    };
                    matched &= exists(&patterns, project.dir);
                }
                "when" => {
                    when = v
                        .as_str()
                        .filter(|w| ["always", "never"].contains(w))
                        .ok_or("`when` of an include rule is `always` or `never`")?
                        .to_owned();
                }
                other => return Err(format!("unknown rule keyword `{other}`")),
            }
        }
        if matched {
            return Ok(when != "never");
        }
    }
    Ok(false)
}

/// `exists`: whether any pattern matches a file of the project (never looking outside it).
pub(crate) fn exists(patterns: &[String], project_dir: &Path) -> bool {
    let patterns: Vec<String> = patterns
        .iter()
        .map(|p| p.trim_start_matches('/').to_owned())
        .collect();
    crate::run::artifacts::resolve_paths(project_dir, &patterns).is_ok_and(|r| !r.found.is_empty())
}

/// Merges `over` into `base`: mappings key by key (recursively), everything else replaced.
/// This is GitLab's `deep_merge` for `include` and `extends` (arrays are not concatenated).
pub(crate) fn deep_merge(base: &mut Mapping, over: Mapping) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Mapping(b)), Value::Mapping(o)) => deep_merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn resolve_references(loaded: &mut Loaded) -> Result<()> {
    let snapshot = loaded.root.clone();
    let keys: Vec<Value> = loaded.root.keys().cloned().collect();
    for key in keys {
        let name = key.as_str().unwrap_or_default().to_owned();
        if let Some(v) = loaded.root.get_mut(&key) {
            resolve_value(v, &snapshot, 0)
                .map_err(|m| loaded.invalid(&name, format!("{name}: {m}")))?;
        }
    }
    Ok(())
}

/// Why a `!reference` tag does not resolve; the caller places it at its job.
#[derive(Debug, thiserror::Error)]
enum BadReference {
    #[error("!reference nested deeper than {MAX_NESTING} levels")]
    TooDeep,
    #[error("!reference takes a list of keys, like !reference [.setup, script]")]
    NotAList,
    #[error("!reference {path:?}: no such job or template")]
    NoTarget { path: Vec<String> },
    #[error("!reference {path:?}: no key `{key}`")]
    NoKey { path: Vec<String>, key: String },
}

fn resolve_value(
    v: &mut Value,
    root: &Mapping,
    depth: usize,
) -> std::result::Result<(), BadReference> {
    match v {
        Value::Tagged(t) if t.tag == "reference" => {
            if depth >= MAX_NESTING {
                return Err(BadReference::TooDeep);
            }
            let path: Vec<String> = match &t.value {
                Value::Sequence(s) => s
                    .iter()
                    .map(|p| p.as_str().map(str::to_owned))
                    .collect::<Option<_>>(),
                _ => None,
            }
            .ok_or(BadReference::NotAList)?;
            let mut target = path
                .first()
                .and_then(|first| root.get(first.as_str()))
                .ok_or_else(|| BadReference::NoTarget { path: path.clone() })?;
            for key in path.iter().skip(1) {
                target = target
                    .get(key.as_str())
                    .ok_or_else(|| BadReference::NoKey {
                        path: path.clone(),
                        key: key.clone(),
                    })?;
            }
            let mut resolved = target.clone();
            resolve_value(&mut resolved, root, depth + 1)?;
            *v = resolved;
            Ok(())
        }
        Value::Tagged(t) => resolve_value(&mut t.value, root, depth),
        Value::Sequence(s) => s.iter_mut().try_for_each(|x| resolve_value(x, root, depth)),
        Value::Mapping(m) => m
            .values_mut()
            .try_for_each(|x| resolve_value(x, root, depth)),
        _ => Ok(()),
    }
}

fn resolve_extends(loaded: &mut Loaded) -> Result<()> {
    let names: Vec<String> = loaded
        .root
        .keys()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    let mut resolved = Mapping::new();
    for name in &names {
        let mut chain = Vec::new();
        let v = extended(name, loaded, &mut chain)?;
        resolved.insert(Value::String(name.clone()), v);
    }
    for (k, v) in resolved {
        loaded.root.insert(k, v);
    }
    Ok(())
}

fn extended(name: &str, loaded: &Loaded, chain: &mut Vec<String>) -> Result<Value> {
    let Some(value) = loaded.root.get(name) else {
        let from = chain.last().cloned().unwrap_or_default();
        return Err(loaded.invalid(&from, format!("{from}: unknown key in `extends`: {name}")));
    };
    let Value::Mapping(job) = value else {
        return Ok(value.clone());
    };
    let Some(ext) = job.get("extends") else {
        return Ok(value.clone());
    };
    if chain.iter().any(|c| c == name) {
        let root = chain.first().cloned().unwrap_or_default();
        return Err(loaded.invalid(
            &root,
            format!("{root}: circular dependency in `extends` through {name}"),
        ));
    }
    if chain.len() > MAX_NESTING {
        return Err(loaded.invalid(
            name,
            format!("{name}: `extends` nested deeper than {MAX_NESTING} levels"),
        ));
    }
    let parents: Vec<String> = match ext {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(s) => s
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => {
            return Err(loaded.invalid(
                name,
                format!("{name}: `extends` takes a name or a list of names"),
            ));
        }
    };
    chain.push(name.to_owned());
    let mut merged = Mapping::new();
    for parent in parents {
        if let Value::Mapping(p) = extended(&parent, loaded, chain)? {
            deep_merge(&mut merged, p);
        }
    }
    chain.pop();
    let mut own = job.clone();
    own.remove("extends");
    deep_merge(&mut merged, own);
    Ok(Value::Mapping(merged))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Loaded> {
        load(
            text,
            Path::new(".gitlab-ci.yml"),
            Path::new("."),
            &BTreeMap::new(),
        )
    }

    #[test]
    fn anchors_and_merge_keys() {
        let l = load_text(
            ".base: &base\n  image: alpine\n  variables: {A: '1'}\njob:\n  <<: *base\n  script: [echo]\n",
        )
        .unwrap();
        assert_eq!(l.root["job"]["image"], "alpine");
        assert_eq!(l.root["job"]["variables"]["A"], "1");
    }

    #[test]
    fn reference_tags_resolve_nested() {
        let l = load_text(
            ".a:\n  script: [one]\n.b:\n  script: [!reference [.a, script], two]\njob:\n  script:\n    - !reference [.b, script]\n    - three\n",
        )
        .unwrap();
        let s = serde_yaml::to_string(&l.root["job"]["script"]).unwrap();
        assert_eq!(s, "- - - one\n  - two\n- three\n");
    }

    #[test]
    fn reference_to_missing_key_is_an_error_with_line() {
        let err = load_text("a: 1\njob:\n  script: !reference [.nope, script]\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with(".gitlab-ci.yml:2: job: !reference"),
            "{err}"
        );
    }

    #[test]
    fn extends_deep_merges_and_replaces_arrays() {
        let l = load_text(
            ".t1:\n  variables: {A: a, B: b}\n  script: [t1]\n  only: [master]\n.t2:\n  extends: .t1\n  variables: {B: b2}\njob:\n  extends: [.t2]\n  variables: {C: c}\n  script: [own]\n",
        )
        .unwrap();
        let job = &l.root["job"];
        assert_eq!(job["variables"]["A"], "a");
        assert_eq!(job["variables"]["B"], "b2");
        assert_eq!(job["variables"]["C"], "c");
        assert_eq!(serde_yaml::to_string(&job["script"]).unwrap(), "- own\n");
        assert_eq!(serde_yaml::to_string(&job["only"]).unwrap(), "- master\n");
        assert!(job.get("extends").is_none());
    }

    #[test]
    fn extends_cycle_and_unknown_are_errors() {
        assert!(load_text("a:\n  extends: b\nb:\n  extends: a\n").is_err());
        let err = load_text("x: 1\njob:\n  extends: .missing\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".gitlab-ci.yml:2: job: unknown key in `extends`: .missing"
        );
    }

    #[test]
    fn invalid_yaml_reports_line() {
        let err = load_text("job:\n  script: [a\n  stage: b\n").unwrap_err();
        match err {
            Error::ParseYaml { line, .. } => assert!(line >= 2, "line {line}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn local_include_merges_under_main_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ci")).unwrap();
        std::fs::write(
            dir.path().join("ci/common.yml"),
            "variables: {A: from-include, B: from-include}\n.tmpl:\n  script: [echo included]\n",
        )
        .unwrap();
        let main =
            "include:\n  - local: /ci/common.yml\nvariables: {B: main}\njob:\n  extends: .tmpl\n";
        let l = load(
            main,
            &dir.path().join(".gitlab-ci.yml"),
            dir.path(),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(l.root["variables"]["A"], "from-include");
        assert_eq!(l.root["variables"]["B"], "main");
        assert_eq!(
            serde_yaml::to_string(&l.root["job"]["script"]).unwrap(),
            "- echo included\n"
        );
        assert!(l.ignored_includes.is_empty());
        for entry in [
            "https://example.com/x.yml",
            "{remote: 'https://example.com/x.yml'}",
            "{project: group/ci, file: x.yml}",
        ] {
            let err = load(
                &format!("include:\n  - {entry}\njob:\n  script: [x]\n"),
                &dir.path().join(".gitlab-ci.yml"),
                dir.path(),
                &BTreeMap::new(),
            )
            .unwrap_err();
            assert!(
                err.to_string().contains("cannot be resolved offline"),
                "{entry}: {err}"
            );
        }
    }
}
