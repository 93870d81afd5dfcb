//! Dockerfile parser properties: no input makes `parse`, the lexer or `.dockerignore` parsing
//! panic, and whatever `parse` accepts survives parse → to_source → parse with the same
//! BuildKit dump and heredocs.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run dockerfile_parse -- -max_total_time=300`

#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_dockerfile::{Dockerfile, Ignore, Lexer, parse, parse_ast};

fn heredocs(df: &Dockerfile) -> Vec<String> {
    df.instructions()
        .flat_map(|i| i.node.heredocs.iter().map(|h| format!("{h:?}")))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_ast(src).map(|a| a.dump());
    if let Ok(df) = parse(src) {
        let text = df.to_source();
        let again = parse(&text).unwrap_or_else(|e| panic!("rendered file rejected: {e}\n{text}"));
        assert_eq!(again.dump(), df.dump(), "dump changed after a round trip");
        assert_eq!(
            heredocs(&again),
            heredocs(&df),
            "heredocs changed after a round trip"
        );
        let _ = format!("{df:?}");
        let lexer = Lexer::new(df.directives.escape);
        let vars = |n: &str| (n.len() % 2 == 0).then(|| n.to_string());
        for i in df.instructions() {
            let _ = i.expand(&lexer, &vars);
        }
    }
    let vars = |n: &str| (n.len() % 2 == 1).then(|| format!("<{n}>"));
    let _ = Lexer::new('\\').expand_words(src, &vars);
    let _ = Lexer::new('`').expand_word(src, &vars);
    if let Ok(ig) = Ignore::parse(src) {
        for p in ["a", "a/b/c", ".", "node_modules/x", "x.log"] {
            let _ = ig.is_excluded(p);
            let _ = ig.may_have_exceptions_under(p);
        }
    }
});
