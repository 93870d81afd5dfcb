//! Layer write throughput (MB/s of file content) of `rbuild_layer::write_layer` with gzip at
//! levels 1, 3 and 6 (6 is Go's default, what docker and buildah use) and zstd level 3, against
//! the shell pipeline `tar -C DIR -cf - . | gzip -N > /dev/null` (N = 1 and 6) on the same
//! directory: a 50 MiB random file (the reference workload) plus 200 small text files. Output
//! goes to a sink in every case, so only tar + hashing + compression is measured.
//! `write_layer` compresses gzip on all cores (pigz-style); `gzip` uses one, so on an idle
//! N-core machine expect up to N times its throughput at the same level.
//!
//! Run: `cargo bench -p rbuild-layer --bench layer_write`

// `criterion_group!` generates an undocumented public function.
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
use std::io;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rbuild_layer::{Compression, LayerOptions, write_layer};

const RANDOM_FILE: usize = 50 << 20;

/// Writes the benchmark tree; returns its content size in bytes.
fn make_tree(dir: &Path) -> u64 {
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    let mut data = vec![0u8; RANDOM_FILE];
    for chunk in data.chunks_mut(8) {
        // xorshift64: incompressible like the binaries and archives layers mostly carry.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    fs::create_dir_all(dir.join("app/src")).expect("create tree");
    fs::write(dir.join("app/blob.bin"), &data).expect("write random file");
    let mut total = data.len() as u64;
    for i in 0..200 {
        let text = format!("// file {i}\n").repeat(50 + i);
        fs::write(dir.join(format!("app/src/f{i:03}.rs")), &text).expect("write small file");
        total += text.len() as u64;
    }
    total
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("tree");
    let bytes = make_tree(&dir);

    let mut g = c.benchmark_group("layer_write");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.warm_up_time(Duration::from_secs(1));

    for level in [1, 3, 6] {
        let opts = LayerOptions::default()
            .compression(Compression::Gzip)
            .gzip_level(level);
        g.bench_with_input(
            BenchmarkId::new("write_layer_gzip", level),
            &opts,
            |b, o| {
                b.iter(|| write_layer(&dir, io::sink(), o).expect("write layer"));
            },
        );
    }
    let zstd = LayerOptions::default().compression(Compression::Zstd);
    g.bench_function("write_layer_zstd/3", |b| {
        b.iter(|| write_layer(&dir, io::sink(), &zstd).expect("write layer"));
    });
    for level in [1, 6] {
        let script = format!(
            "tar -C '{}' -cf - . | gzip -{level} > /dev/null",
            dir.display()
        );
        g.bench_with_input(BenchmarkId::new("tar_pipe_gzip", level), &script, |b, s| {
            b.iter(|| {
                let st = Command::new("sh")
                    .arg("-c")
                    .arg(s)
                    .status()
                    .expect("run sh");
                assert!(st.success(), "tar | gzip failed");
            });
        });
    }
    g.finish();

    // Sizes, printed once: the other half of the level trade-off.
    for level in [1, 3, 6] {
        let opts = LayerOptions::default().gzip_level(level);
        let (_, d) = write_layer(&dir, io::sink(), &opts).expect("write layer");
        println!(
            "gzip level {level}: blob {} bytes for {bytes} bytes of content",
            d.size
        );
    }
    let (_, d) = write_layer(&dir, io::sink(), &zstd).expect("write layer");
    println!("zstd level 3: blob {} bytes", d.size);
}

criterion_group!(benches, bench);
criterion_main!(benches);
