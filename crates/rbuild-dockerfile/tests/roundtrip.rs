//! Property test without extra dependencies: for every fixture and many mutations of it, parsing
//! never panics, and when it succeeds, parse → to_source → parse gives the same dump and heredocs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::path::Path;

use rbuild_dockerfile::{Dockerfile, parse};

fn heredocs(df: &Dockerfile) -> Vec<String> {
    df.instructions()
        .flat_map(|i| i.node.heredocs.iter().map(|h| format!("{h:?}")))
        .collect()
}

fn check(src: &str) -> bool {
    let Ok(df) = parse(src) else { return false };
    let text = df.to_source();
    let again = parse(&text)
        .unwrap_or_else(|e| panic!("reparse failed: {e}\n--- input\n{src}\n--- rendered\n{text}"));
    assert_eq!(
        again.dump(),
        df.dump(),
        "--- input\n{src}\n--- rendered\n{text}"
    );
    assert_eq!(heredocs(&again), heredocs(&df), "--- input\n{src}");
    true
}

fn fixtures() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&root).unwrap() {
        let p = e.unwrap().path();
        if p.join("Dockerfile").is_file() {
            out.push(std::fs::read_to_string(p.join("Dockerfile")).unwrap());
        }
    }
    for e in std::fs::read_dir(root.join("real")).unwrap() {
        out.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
    }
    out
}

/// A tiny deterministic generator (xorshift) so the test needs no crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

const PIECES: &[&str] = &[
    "\\",
    "`",
    "\n",
    "\r\n",
    " ",
    "\t",
    "#",
    "\"",
    "'",
    "$",
    "${",
    "}",
    "<<",
    "<<-",
    "EOF",
    "[",
    "]",
    ",",
    "--",
    "=",
    "\\\n",
    "RUN ",
    "COPY ",
    "ONBUILD ",
    "FROM x\n",
    "# escape=`\n",
    "\u{feff}",
    "é",
];

#[test]
fn parse_render_parse_is_stable() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    let mut total = 0;
    for src in fixtures() {
        total += 1;
        accepted += usize::from(check(&src));
        let chars: Vec<char> = src.chars().collect();
        for _ in 0..60 {
            let mut m = chars.clone();
            for _ in 0..(1 + rng.next() % 3) {
                let at = (rng.next() as usize) % (m.len() + 1);
                match rng.next() % 3 {
                    0 if at < m.len() => {
                        m.remove(at);
                    }
                    1 => m.truncate(at),
                    _ => {
                        let piece = PIECES[(rng.next() as usize) % PIECES.len()];
                        for (k, c) in piece.chars().enumerate() {
                            m.insert((at + k).min(m.len()), c);
                        }
                    }
                }
            }
            let s: String = m.into_iter().collect();
            total += 1;
            accepted += usize::from(check(&s));
        }
    }
    assert!(
        accepted * 5 > total,
        "too few mutants parse: {accepted}/{total}"
    );
}
