//! BuildKit's own parser corpus (`frontend/dockerfile/parser/testfiles` and
//! `testfiles-negative` in moby/buildkit, Apache-2.0; see `testdata/buildkit/README.md`), run
//! the way BuildKit's `TestParseCases` and `TestParseErrorCases` run it: every accepted file's
//! AST dump must equal its `result` byte for byte, every negative file must be rejected.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::path::{Path, PathBuf};

use rbuild_dockerfile::parse_ast;

fn cases(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/buildkit")
        .join(dir);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn buildkit_testfiles_dump_byte_equal() {
    let dirs = cases("testfiles");
    // The corpus as imported: a lost directory must fail the test, not shrink it.
    assert_eq!(dirs.len(), 33, "BuildKit parser cases found");
    let mut failures = Vec::new();
    for dir in &dirs {
        let src = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let expected = std::fs::read_to_string(dir.join("result")).unwrap();
        match parse_ast(&src) {
            Ok(ast) => {
                let dump = ast.dump();
                if dump != expected {
                    failures.push(format!(
                        "{}:\n--- result\n{expected}--- dump\n{dump}",
                        dir.display()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: rejected: {e}", dir.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} case(s) differ:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

#[test]
fn buildkit_testfiles_negative_rejected() {
    let dirs = cases("testfiles-negative");
    assert_eq!(dirs.len(), 4, "BuildKit negative parser cases found");
    for dir in &dirs {
        let src = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
        if let Ok(ast) = parse_ast(&src) {
            panic!("{}: accepted:\n{}", dir.display(), ast.dump());
        }
    }
}
