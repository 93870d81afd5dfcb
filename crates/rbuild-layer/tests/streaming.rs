//! Memory must not grow with the layer: a 200 MiB file goes through `write_layer` and
//! `unpack_layer` while the process' peak RSS (`VmHWM`) stays far below the file size.
//!
//! Its own test binary, so that no other test's allocations move the process-wide peak.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};

use rbuild_layer::{Compression, LayerOptions, unpack_layer, write_layer};

const FILE_SIZE: u64 = 200 << 20;
/// Growth allowed: buffers, the compressor's window, allocator slack. A writer that held the
/// file (or the blob) in memory would grow by at least the file size.
const ALLOWED_GROWTH_KIB: u64 = 48 << 10;

fn vm_hwm_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// A mostly sparse file with 1 MiB of pseudo-random data every 8 MiB, so that the compressor
/// sees both zeros and incompressible bytes.
fn make_file(path: &std::path::Path) {
    let mut f = File::create(path).unwrap();
    f.set_len(FILE_SIZE).unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut chunk = vec![0u8; 1 << 20];
    for off in (0..FILE_SIZE).step_by(8 << 20) {
        for b in chunk.chunks_mut(8) {
            // xorshift64: cheap bytes gzip cannot shrink.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b.copy_from_slice(&state.to_le_bytes()[..b.len()]);
        }
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&chunk).unwrap();
    }
}

#[test]
fn memory_does_not_grow_with_the_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    make_file(&src.join("big"));
    let blob_path = tmp.path().join("layer.tar.gz");

    let before = vm_hwm_kib();
    let out = BufWriter::new(File::create(&blob_path).unwrap());
    let opts = LayerOptions::default().compression(Compression::Gzip);
    let (out, desc) = write_layer(&src, out, &opts).unwrap();
    drop(out);
    let after_write = vm_hwm_kib();
    assert_eq!(fs::metadata(&blob_path).unwrap().len(), desc.size);
    assert!(
        after_write - before < ALLOWED_GROWTH_KIB,
        "write_layer grew the peak RSS by {} KiB for a {} MiB file",
        after_write - before,
        FILE_SIZE >> 20
    );

    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    let stats = unpack_layer(File::open(&blob_path).unwrap(), &dest).unwrap();
    let after_unpack = vm_hwm_kib();
    assert_eq!(stats.diff_id, desc.diff_id);
    assert_eq!(stats.bytes, FILE_SIZE);
    assert_eq!(fs::metadata(dest.join("big")).unwrap().len(), FILE_SIZE);
    assert!(
        after_unpack - before < ALLOWED_GROWTH_KIB,
        "unpack_layer grew the peak RSS by {} KiB",
        after_unpack - before
    );
    // The probe itself works: touching 64 MiB does move the peak.
    let probe = std::hint::black_box(vec![1u8; 64 << 20]);
    assert!(vm_hwm_kib() >= after_unpack + (60 << 10));
    drop(probe);
    eprintln!(
        "peak RSS: {before} KiB before, {after_write} KiB after write, {after_unpack} KiB after unpack"
    );
}
