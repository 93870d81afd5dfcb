//! `.gitlab-ci.yml` loading: no document panics the loader (anchors, merge keys, deep nesting,
//! `!reference` tags), and a document that loads gives a pipeline whose Debug form is stable
//! when loaded twice (no hidden randomness such as HashMap order leaking into plans).
//!
//! Run: `cd fuzz && cargo +nightly fuzz run pipeline_yaml -- -max_total_time=60`

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rbuild_pipeline::Pipeline;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A project directory that does not exist: `include: local` must fail, not read the host.
    let project = Path::new("/nonexistent-rbuild-fuzz-project");
    let path = project.join(".gitlab-ci.yml");
    let first = Pipeline::parse(text, &path, project);
    let second = Pipeline::parse(text, &path, project);
    assert_eq!(
        format!("{first:?}"),
        format!("{second:?}"),
        "loading the same document twice differs"
    );
});
