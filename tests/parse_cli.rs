//! `rbuild parse`: `--format dump` prints BuildKit's parser AST for whatever BuildKit's parser
//! accepts (no instruction rules); `--format json` applies the rules `build` applies.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{bin, stderr, stdout};

fn parse(file: &Path, format: &str) -> Output {
    Command::new(bin())
        .args(["parse", "--format", format, "-f"])
        .arg(file)
        .output()
        .expect("spawn rbuild")
}

/// Files BuildKit's parser accepts though no build would: the dump must not validate.
const PARSER_ONLY: &str = r#"CMD ["echo", "before FROM"]
FROM busybox
COPY --no-such-flag=1 a b
HEALTHCHECK
FOO bar
RUN ["not json" "missing comma"]
ENTRYPOINT [ "a" , "b" ]
"#;

const PARSER_ONLY_DUMP: &str = r#"(cmd "echo" "before FROM")
(from "busybox")
(copy ["--no-such-flag=1"] "a" "b")
(healthcheck)
(foo "")
(run "[\"not json\" \"missing comma\"]")
(entrypoint "a" "b")
"#;

#[test]
fn dump_prints_files_only_the_parser_accepts_and_json_rejects_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Dockerfile");
    std::fs::write(&file, PARSER_ONLY).unwrap();

    let o = parse(&file, "dump");
    assert!(o.status.success(), "dump failed: {}", stderr(&o));
    assert_eq!(stdout(&o), PARSER_ONLY_DUMP);

    let o = parse(&file, "json");
    assert_eq!(o.status.code(), Some(1), "json accepted:\n{}", stdout(&o));
    assert!(stdout(&o).is_empty());
    let err = stderr(&o);
    assert!(
        err.starts_with(&format!("{}:1: ", file.display())),
        "json error does not say where: {err}"
    );
}

#[test]
fn dump_rejects_what_the_parser_rejects_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Dockerfile");
    std::fs::write(&file, "FROM x\n\nCMD [\"a\", [\"nested\"]]\n").unwrap();
    let o = parse(&file, "dump");
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty(), "partial dump: {}", stdout(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "{}:3: when using JSON array syntax, arrays must be comprised of strings only\n",
            file.display()
        )
    );
}

fn corpus(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rbuild-dockerfile/testdata/buildkit")
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
fn dump_of_buildkits_parser_corpus_is_byte_equal() {
    let cases = corpus("testfiles");
    assert_eq!(cases.len(), 33);
    let mut failures = Vec::new();
    for case in &cases {
        let o = parse(&case.join("Dockerfile"), "dump");
        let expected = std::fs::read(case.join("result")).unwrap();
        if !o.status.success() || o.stdout != expected {
            failures.push(format!(
                "{}: exit {}\n--- result\n{}--- stdout\n{}--- stderr\n{}",
                case.display(),
                o.status,
                String::from_utf8_lossy(&expected),
                stdout(&o),
                stderr(&o)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let negatives = corpus("testfiles-negative");
    assert_eq!(negatives.len(), 4);
    for case in &negatives {
        let file = case.join("Dockerfile");
        let o = parse(&file, "dump");
        assert_eq!(o.status.code(), Some(1), "{} accepted", case.display());
        assert!(
            stderr(&o).starts_with(&format!("{}:", file.display())),
            "{}: {}",
            case.display(),
            stderr(&o)
        );
    }
}
