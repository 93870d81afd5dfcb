//! Cache-key work on a build context of N files: walking it, hashing it with a cold file-hash
//! cache (every file read) and with a warm one (every file only stat'ed), and computing a COPY
//! step's source digest — what a no-change rebuild pays before it can say "CACHED".
//!
//! Run: `cargo bench -p rbuild --bench cache_keys`

// criterion's macros generate the undocumented `main` and group functions.
#![allow(missing_docs)]

use std::fs;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rbuild::context::{Context, HashCache};
use rbuild::copy::{self, CopyRequest};

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
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("context");
    for files in [500usize, 2000, 8000] {
        let dir = tempfile::tempdir().unwrap();
        make_context(dir.path(), files);
        group.throughput(Throughput::Elements(files as u64));
        group.bench_with_input(BenchmarkId::new("walk", files), &files, |b, _| {
            b.iter(|| Context::walk(dir.path()).unwrap());
        });
        group.bench_with_input(BenchmarkId::new("hash_cold", files), &files, |b, _| {
            b.iter(|| {
                let mut ctx = Context::walk(dir.path()).unwrap();
                let mut cache = HashCache::default();
                ctx.hash_files(&[String::new()], &mut cache).unwrap()
            });
        });
        let mut warm = HashCache::default();
        Context::walk(dir.path())
            .unwrap()
            .hash_files(&[String::new()], &mut warm)
            .unwrap();
        group.bench_with_input(BenchmarkId::new("hash_warm", files), &files, |b, _| {
            b.iter(|| {
                let mut ctx = Context::walk(dir.path()).unwrap();
                let read = ctx.hash_files(&[String::new()], &mut warm).unwrap();
                assert_eq!(read, 0, "a warm cache reads no file");
            });
        });
        group.bench_with_input(BenchmarkId::new("copy_key_warm", files), &files, |b, _| {
            let sources = vec![".".to_owned()];
            b.iter(|| {
                let mut ctx = Context::walk(dir.path()).unwrap();
                let req = CopyRequest {
                    sources: &sources,
                    dest: "/src",
                    workdir: "/",
                    chown: None,
                    chmod: None,
                    keyword: "COPY",
                    exclude: &[],
                    parents: false,
                    keep_owners: false,
                    origin: "the build context",
                };
                copy::plan(&mut ctx, &mut warm, &req).unwrap().digest
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
