//! The in-place executor's cost on an unchanged root of 100,000 files (500 directories of 200
//! files of 50–2,000 bytes): the stat index taken before a RUN step, and the snapshot after it
//! (a second walk compared with the first; nothing changed, so nothing is read or written).
//! Goal: the snapshot under 300 ms. Medians of 5, page cache warm.
//!
//! Run: `cargo bench -p rbuild --bench inplace_snapshot`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::fs;
use std::time::Duration;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut seed = 42u64;
    for d in 0..500 {
        let sub = root.join(format!("d{d:03}"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..200 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let size = 50 + (seed >> 33) as usize % 1950;
            fs::write(sub.join(format!("f{f:03}")), vec![b'x'; size]).unwrap();
        }
    }
    let mut index = Vec::new();
    let mut snapshot = Vec::new();
    for i in 0..6 {
        let upper = dir.path().join(format!("upper{i}"));
        fs::create_dir(&upper).unwrap();
        let (a, b) = rbuild::executor::time_unchanged_snapshot(&root, &upper).unwrap();
        assert_eq!(fs::read_dir(&upper).unwrap().count(), 0, "nothing changed");
        if i > 0 {
            // The first round warms the page cache and the dentry cache.
            index.push(a);
            snapshot.push(b);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "100,000 files: index before the step {:.1} ms, snapshot after it {:.1} ms (median of 5; goal < 300 ms)",
        median(&mut index).as_secs_f64() * 1e3,
        median(&mut snapshot).as_secs_f64() * 1e3
    );
}
