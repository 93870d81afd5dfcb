//! Cache-key work on a build context of N files, through the engine's public API with a test
//! executor (no RUN process): a no-change rebuild (walk the context, check the file-hash cache,
//! compute every key, find every step cached) and a rebuild after one file changed (re-hash one
//! file, re-copy and re-write the COPY layer).
//!
//! Run: `cargo bench -p rbuild --bench cache_keys`

// criterion's macros generate the undocumented `main` and group functions.
#![expect(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::fs;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rbuild::executor::{FnExecutor, RunOutcome};
use rbuild::{BuildOptions, Builder, Store};

fn make_context(dir: &Path, files: usize) {
    for i in 0..files {
        let d = dir.join(format!("dir{:02}", i % 20));
        fs::create_dir_all(&d).unwrap();
        let size = 100 + (i * 37) % 3900;
        fs::write(
            d.join(format!("file{i:05}.txt")),
            vec![b'a' + (i % 26) as u8; size],
        )
        .unwrap();
    }
    // The ids running the bench own the copy, so it needs no privilege.
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    fs::write(
        dir.join("Dockerfile"),
        format!("FROM scratch\nCOPY --chown={uid}:{gid} . /src\nRUN true\n"),
    )
    .unwrap();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("context");
    for files in [500usize, 2000, 8000] {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        make_context(&ctx, files);
        let store = Store::open(&dir.path().join("store")).unwrap();
        let builder =
            Builder::new(store).executor(FnExecutor::new(|_, _| Ok(RunOutcome::exited(0))));
        let build = || {
            rt.block_on(builder.build(BuildOptions::new(&ctx).source_date_epoch(0)))
                .unwrap()
        };
        build();
        group.throughput(Throughput::Elements(files as u64));
        group.bench_with_input(BenchmarkId::new("no_change", files), &files, |b, _| {
            b.iter(|| {
                let out = build();
                assert_eq!(out.cached_steps, out.total_steps - 1, "every step cached");
            });
        });
        let mut n = 0u64;
        group.bench_with_input(
            BenchmarkId::new("one_file_changed", files),
            &files,
            |b, _| {
                b.iter(|| {
                    n += 1;
                    fs::write(ctx.join("dir00/file00000.txt"), n.to_string()).unwrap();
                    build()
                });
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
