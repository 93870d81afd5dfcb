//! Data-driven cases: `testdata/<case>/Dockerfile` against `testdata/<case>/expected`, in the
//! layout of BuildKit's `parser/testfiles/<case>/{Dockerfile,result}`.
//!
//! `expected` holds BuildKit's AST dump, then what the dump leaves out (heredoc bodies,
//! warnings), or `error: …` for a file that must be rejected. With a `vars` file (`NAME=value`
//! lines) every instruction is also expanded and the result listed. `typed.json` is the JSON of
//! the typed result. `UPDATE_EXPECT=1 cargo test` rewrites the files after a deliberate change.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rbuild_dockerfile::{Dockerfile, Lexer, parse};

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn snapshot(df: &Dockerfile, vars: Option<&str>) -> String {
    let mut out = df.dump();
    for i in df.instructions() {
        for h in &i.node.heredocs {
            writeln!(
                out,
                "heredoc {} name={} fd={} expand={} chomp={} content={}",
                i.span.start_line,
                quote(&h.name),
                h.file_descriptor,
                h.expand,
                h.chomp,
                quote(&h.content)
            )
            .unwrap();
        }
    }
    for w in &df.warnings {
        writeln!(out, "warning {} {}: {}", w.line, w.rule, w.message).unwrap();
    }
    if let Some(vars) = vars {
        let lookup = |name: &str| {
            vars.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let lexer = Lexer::new(df.directives.escape);
        for i in df.instructions() {
            match i.expand(&lexer, &lookup) {
                Ok((e, r)) => writeln!(
                    out,
                    "expand {} {}: {} used={:?} unset={:?}",
                    i.span.start_line,
                    i.keyword(),
                    serde_json::to_string(&e.kind).unwrap(),
                    r.used,
                    r.unset
                )
                .unwrap(),
                Err(e) => {
                    let cause = std::error::Error::source(&e).map(|c| format!(": {c}"));
                    writeln!(out, "expand error: {e}{}", cause.unwrap_or_default()).unwrap();
                }
            }
        }
    }
    out
}

fn check(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected != actual {
        failures.push(format!(
            "{}:\n--- expected\n{expected}--- actual\n{actual}",
            path.display()
        ));
    }
}

fn case_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn testdata_cases() {
    let dirs = case_dirs();
    assert!(dirs.len() >= 40, "only {} cases found", dirs.len());
    let mut failures = Vec::new();
    for dir in &dirs {
        let src = std::fs::read(dir.join("Dockerfile")).unwrap();
        let vars = std::fs::read_to_string(dir.join("vars")).ok();
        let src = String::from_utf8(src).unwrap();
        match parse(&src) {
            Ok(df) => {
                check(
                    &dir.join("expected"),
                    &snapshot(&df, vars.as_deref()),
                    &mut failures,
                );
                let json = serde_json::to_string_pretty(&df).unwrap() + "\n";
                check(&dir.join("typed.json"), &json, &mut failures);
                // The reparse property holds for every accepted case.
                let again = parse(&df.to_source()).unwrap();
                assert_eq!(
                    again.dump(),
                    df.dump(),
                    "{}: to_source round trip",
                    dir.display()
                );
            }
            Err(e) => check(
                &dir.join("expected"),
                &format!("error: {e}\n"),
                &mut failures,
            ),
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn real_style_files_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/real");
    let mut n = 0;
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        let src = std::fs::read_to_string(&p).unwrap();
        let df = parse(&src).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(!df.stages.is_empty(), "{}", p.display());
        let again = parse(&df.to_source()).unwrap();
        assert_eq!(again.dump(), df.dump(), "{}", p.display());
        n += 1;
    }
    assert!(n >= 5, "only {n} real-style files");
}

/// `testdata/buildkit-ast/<case>/{Dockerfile,result}`: BuildKit parser-level cases (no
/// instruction rules, so an unknown keyword or a bare HEALTHCHECK is kept), compared with the
/// dump alone, like BuildKit's own `parser/testfiles`.
#[test]
fn buildkit_ast_dumps() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/buildkit-ast");
    let mut failures = Vec::new();
    let mut n = 0;
    for e in std::fs::read_dir(root).unwrap() {
        let dir = e.unwrap().path();
        let src = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let dump = rbuild_dockerfile::parse_ast(&src).unwrap().dump();
        check(&dir.join("result"), &dump, &mut failures);
        n += 1;
    }
    assert!(n >= 4);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
