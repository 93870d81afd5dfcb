//! `--explain`: why a step missed the cache, as the first input that differs from the last
//! build of that step.
//!
//! Every build records, per stage and step, the inputs its cache key was made of (parent key,
//! instruction, visible build args, the COPY sources as they land). On the next build a miss is
//! explained by comparing the step's inputs with that record, in key order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The inputs a step's cache key is made of, kept in a readable form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StepInputs {
    /// The step's cache key.
    pub key: String,
    /// Key of the step before (for the first step: the base image's manifest digest).
    pub parent: String,
    /// Whether this is the first step of its stage (then `parent` names the base image).
    pub first: bool,
    /// The instruction as history shows it.
    pub created_by: String,
    /// Build args visible to the step, `KEY=value`.
    pub args: Vec<String>,
    /// COPY/ADD sources: context path → `kind mode uid:gid content-or-target → dest`.
    pub files: BTreeMap<String, String>,
}

/// What one build recorded: stage index → steps in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BuildRecord {
    /// Steps per stage.
    pub stages: BTreeMap<usize, Vec<StepInputs>>,
}

fn short(parent: &str) -> String {
    if let Some(hex) = parent.strip_prefix("sha256:") {
        format!("sha256:{}", &hex[..hex.len().min(12)])
    } else {
        parent.chars().take(12).collect()
    }
}

fn split_kv(s: &str) -> (&str, &str) {
    s.split_once('=').unwrap_or((s, ""))
}

/// Explains a miss of `cur` against the last recorded build of the same step.
pub(crate) fn explain(prev: Option<&StepInputs>, cur: &StepInputs) -> String {
    let Some(prev) = prev else {
        return "no earlier build of this step is recorded".to_owned();
    };
    if prev.parent != cur.parent {
        return if cur.first {
            format!(
                "base image changed: {} → {}",
                short(&prev.parent),
                short(&cur.parent)
            )
        } else {
            "an earlier step of this stage missed the cache".to_owned()
        };
    }
    if prev.args != cur.args {
        let old: BTreeMap<&str, &str> = prev.args.iter().map(|a| split_kv(a)).collect();
        let new: BTreeMap<&str, &str> = cur.args.iter().map(|a| split_kv(a)).collect();
        for (k, v) in &new {
            match old.get(k) {
                None => return format!("build arg {k} is new (={v})"),
                Some(o) if o != v => return format!("build arg {k} changed: {o:?} → {v:?}"),
                _ => {}
            }
        }
        if let Some(k) = old.keys().find(|k| !new.contains_key(*k)) {
            return format!("build arg {k} is no longer set");
        }
    }
    if prev.created_by != cur.created_by {
        return format!("instruction changed (was `{}`)", prev.created_by);
    }
    if prev.files != cur.files {
        for (path, v) in &cur.files {
            match prev.files.get(path) {
                None => return format!("file {path} was added"),
                Some(o) if o != v => return format!("file {path}: {}", what_changed(o, v)),
                _ => {}
            }
        }
        if let Some(path) = prev.files.keys().find(|p| !cur.files.contains_key(*p)) {
            return format!("file {path} was removed");
        }
    }
    if prev.key == cur.key {
        "the step's result is no longer in the cache (pruned)".to_owned()
    } else {
        "the platform changed".to_owned()
    }
}

fn what_changed(old: &str, new: &str) -> String {
    // Both are "kind mode uid:gid content → dest".
    let o: Vec<&str> = old.splitn(4, ' ').collect();
    let n: Vec<&str> = new.splitn(4, ' ').collect();
    let names = ["type", "mode", "owner", "content"];
    for (i, name) in names.iter().enumerate() {
        if o.get(i) != n.get(i) {
            return match i {
                3 if o.get(3).map(|s| s.split(" → ").nth(1))
                    != n.get(3).map(|s| s.split(" → ").nth(1)) =>
                {
                    "destination changed".to_owned()
                }
                1 | 2 => format!(
                    "{name} changed: {} → {}",
                    o.get(i).unwrap_or(&""),
                    n.get(i).unwrap_or(&"")
                ),
                _ => format!("{name} changed"),
            };
        }
    }
    "changed".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> StepInputs {
        StepInputs {
            key: "k".into(),
            parent: "sha256:aaaaaaaaaaaaaaaa".into(),
            first: true,
            created_by: "RUN x".into(),
            args: vec!["A=1".into()],
            files: [("a.txt".to_owned(), "f 644 0:0 abc → /src/a.txt".to_owned())].into(),
        }
    }

    #[test]
    fn names_the_first_differing_input() {
        let prev = base();
        assert!(explain(None, &prev).contains("no earlier build"));
        let mut c = base();
        c.parent = "sha256:bbbbbbbbbbbbbbbb".into();
        assert_eq!(
            explain(Some(&prev), &c),
            "base image changed: sha256:aaaaaaaaaaaa → sha256:bbbbbbbbbbbb"
        );
        c.first = false;
        assert_eq!(
            explain(Some(&prev), &c),
            "an earlier step of this stage missed the cache"
        );
        let mut c = base();
        c.created_by = "RUN y".into();
        assert_eq!(
            explain(Some(&prev), &c),
            "instruction changed (was `RUN x`)"
        );
        let mut c = base();
        c.args = vec!["A=2".into()];
        assert_eq!(
            explain(Some(&prev), &c),
            "build arg A changed: \"1\" → \"2\""
        );
        let mut c = base();
        c.args = vec!["A=1".into(), "B=2".into()];
        assert_eq!(explain(Some(&prev), &c), "build arg B is new (=2)");
        let mut c = base();
        c.files
            .insert("a.txt".into(), "f 755 0:0 abc → /src/a.txt".into());
        assert_eq!(
            explain(Some(&prev), &c),
            "file a.txt: mode changed: 644 → 755"
        );
        c.files
            .insert("a.txt".into(), "f 644 0:0 abd → /src/a.txt".into());
        assert_eq!(explain(Some(&prev), &c), "file a.txt: content changed");
        c.files
            .insert("b.txt".into(), "f 644 0:0 x → /src/b.txt".into());
        c.files
            .insert("a.txt".into(), "f 644 0:0 abc → /src/a.txt".into());
        assert_eq!(explain(Some(&prev), &c), "file b.txt was added");
        assert_eq!(
            explain(Some(&prev), &prev.clone()),
            "the step's result is no longer in the cache (pruned)"
        );
    }
}
