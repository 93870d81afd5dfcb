//! Layer apply and unpack into a temp root: no input panics, and nothing is ever written
//! outside the root (the property behind CVE-2019-14271-style tar escapes). A canary file
//! next to the root and a directory a symlink could point at must stay untouched.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run layer_apply -- -max_total_time=60`

#![no_main]

use std::fs;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fn outside_listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(dir);
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.display().to_string());
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p));
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let base = tempfile::tempdir().expect("temp dir");
    let outside = base.path().join("outside");
    fs::create_dir(&outside).expect("outside dir");
    fs::write(outside.join("canary"), b"canary").expect("canary");
    let before = outside_listing(base.path());
    for (i, unpack) in [false, true].into_iter().enumerate() {
        let root = base.path().join(format!("root{i}"));
        fs::create_dir(&root).expect("root");
        let _ = if unpack {
            rbuild_layer::unpack_layer(data, &root).map(|_| ())
        } else {
            rbuild_layer::apply_layer(data, &root).map(|_| ())
        };
        assert_eq!(
            fs::read(outside.join("canary")).expect("canary readable"),
            b"canary",
            "a layer changed a file outside the root"
        );
        let now: Vec<String> = outside_listing(base.path())
            .into_iter()
            .filter(|p| !p.contains("/root0") && !p.contains("/root1"))
            .collect();
        assert_eq!(now, before, "a layer created something outside the root");
    }
});
