//! Round trips through real files: tree → `write_layer` → `unpack_layer` / `apply_layer` →
//! compare, plus determinism and an independent reader (GNU tar).
//!
//! These tests need root (ownership, device nodes, `trusted.*` xattrs); without it they skip
//! with a message.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::stat::{Mode, SFlag, mknod};
use nix::sys::time::TimeSpec;
use rbuild_layer::{
    Compression, LayerOptions, apply_layer, is_empty_diff, unpack_layer, write_layer,
};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root for chown, mknod and trusted.* xattrs");
            return;
        }
    };
}

fn set_mtime(p: &Path, secs: i64) {
    let t = TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Builds a tree with every kind of entry a layer directory can hold.
fn build_tree(d: &Path) {
    fs::create_dir_all(d.join("etc")).unwrap();
    fs::write(d.join("etc/hello"), b"hello world\n").unwrap();
    std::os::unix::fs::chown(d.join("etc/hello"), Some(1000), Some(1001)).unwrap();
    fs::hard_link(d.join("etc/hello"), d.join("etc/hello.hardlink")).unwrap();
    symlink("etc/hello", d.join("link")).unwrap();
    std::os::unix::fs::lchown(d.join("link"), Some(7), Some(8)).unwrap();

    let long_dir = d.join("deep").join("d".repeat(120));
    fs::create_dir_all(&long_dir).unwrap();
    fs::write(long_dir.join(format!("{}.txt", "f".repeat(110))), b"long").unwrap();
    symlink("t".repeat(150), d.join("deep/long-target")).unwrap();

    fs::write(d.join("suid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(d.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(d.join("tagged"), b"x").unwrap();
    xattr::set(d.join("tagged"), "user.note", b"kept").unwrap();
    xattr::set(d.join("tagged"), "trusted.overlay.origin", b"dropped").unwrap();

    nix::unistd::mkfifo(&d.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
    mknod(
        &d.join("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        libc::makedev(1, 3),
    )
    .unwrap();
    fs::create_dir(d.join("empty")).unwrap();
    fs::set_permissions(d.join("empty"), fs::Permissions::from_mode(0o700)).unwrap();

    // overlay upperdir markers: a whiteout and an opaque directory.
    mknod(&d.join("gone"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    fs::create_dir(d.join("opq")).unwrap();
    fs::write(d.join("opq/new"), b"new").unwrap();
    xattr::set(d.join("opq"), "trusted.overlay.opaque", b"y").unwrap();

    // Stable mtimes, directories last (writing a child changes its directory's mtime).
    let mut all: Vec<PathBuf> = walk(d).into_keys().map(|p| d.join(p)).collect();
    all.reverse();
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64);
    }
}

/// A comparable description of every path under `root`.
fn walk(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    fn rec(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("link->{}", fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                format!("file:{:?}", fs::read(&p).unwrap())
            } else if ft.is_fifo() {
                "fifo".into()
            } else {
                format!("dev:{}", m.rdev())
            };
            let mut xattrs: Vec<String> = xattr::list(&p)
                .unwrap()
                .map(|k| {
                    let v = xattr::get(&p, &k).unwrap().unwrap_or_default();
                    format!("{}={}", k.to_string_lossy(), String::from_utf8_lossy(&v))
                })
                .collect();
            xattrs.sort();
            let desc = format!(
                "{kind} mode={:o} uid={} gid={} mtime={} nlink={} xattrs={:?}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                m.mtime(),
                if ft.is_dir() { 0 } else { m.nlink() },
                xattrs
            );
            out.insert(p.strip_prefix(root).unwrap().to_owned(), desc);
            if ft.is_dir() {
                rec(root, &p, out);
            }
        }
    }
    rec(root, root, &mut out);
    out
}

#[test]
fn roundtrip_through_unpack_keeps_everything_and_the_digests() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);

    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        let opts = LayerOptions::default().compression(compression);
        let (blob, desc) = write_layer(&src, Vec::new(), &opts).unwrap();
        assert_eq!(desc.size, blob.len() as u64);
        assert_eq!(desc.digest, rbuild_oci::Digest::sha256_of(&blob));
        assert_eq!(desc.media_type, compression.media_type());

        let dest = tmp.path().join(format!("dest-{compression:?}"));
        fs::create_dir(&dest).unwrap();
        let stats = unpack_layer(&blob[..], &dest).unwrap();
        assert_eq!(stats.diff_id, desc.diff_id);
        assert_eq!(stats.whiteouts, 2, "one whiteout, one opaque marker");

        let mut want = walk(&src);
        // overlayfs' private xattrs other than the opaque marker are not layer content.
        let tagged = want.get_mut(Path::new("tagged")).unwrap();
        *tagged = tagged.replace("\"trusted.overlay.origin=dropped\", ", "");
        assert_eq!(walk(&dest), want);

        // Writing the unpacked tree again gives the very same layer.
        let (_, again) = write_layer(&dest, Vec::new(), &opts).unwrap();
        assert_eq!(again, desc);
    }
}

#[test]
fn gnu_tar_reads_the_layer_and_sees_whiteouts() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    let blob = tmp.path().join("layer.tar.gz");
    let (_, _) = write_layer(
        &src,
        fs::File::create(&blob).unwrap(),
        &LayerOptions::default(),
    )
    .unwrap();
    let out = Command::new("tar")
        .arg("-tvzf")
        .arg(&blob)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.contains(" .wh.gone"), "{listing}");
    assert!(listing.contains(" opq/.wh..wh..opq"), "{listing}");
    assert!(listing.contains("-rwsr-xr-x 0/0"), "setuid kept: {listing}");
    assert!(listing.contains("1000/1001"), "numeric owner: {listing}");
    assert!(
        listing.contains(&format!("{}.txt", "f".repeat(110))),
        "long name: {listing}"
    );
    assert!(
        listing.contains("etc/hello.hardlink link to etc/hello"),
        "{listing}"
    );
    // GNU tar's own extraction agrees on contents too.
    let x = tmp.path().join("x");
    fs::create_dir(&x).unwrap();
    let st = Command::new("tar")
        .arg("-xzf")
        .arg(&blob)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        fs::read(x.join("etc/hello.hardlink")).unwrap(),
        b"hello world\n"
    );
    assert!(x.join(".wh.gone").is_file());
}

#[test]
fn unpacks_what_gnu_tar_writes() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    // GNU format: long names as `L` entries, a `./` root entry, the whiteout as a plain
    // character device 0/0 — all things a layer from another builder may contain.
    let blob = tmp.path().join("gnu.tar.gz");
    let st = Command::new("tar")
        .args([
            "--format=gnu",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=user.*",
        ])
        .arg("-C")
        .arg(&src)
        .arg("-czf")
        .arg(&blob)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    unpack_layer(fs::File::open(&blob).unwrap(), &dest).unwrap();
    let mut want = walk(&src);
    for (path, drop) in [
        ("tagged", "\"trusted.overlay.origin=dropped\", "),
        ("opq", "\"trusted.overlay.opaque=y\""),
    ] {
        let v = want.get_mut(Path::new(path)).unwrap();
        *v = v.replace(drop, "");
    }
    assert_eq!(walk(&dest), want);
}

#[test]
fn same_tree_same_digests_and_epoch_clamps() {
    let tmp = tempfile::tempdir().unwrap();
    let mk = |name: &str, mtime: i64| {
        let d = tmp.path().join(name);
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("sub/f"), b"content").unwrap();
        fs::write(d.join("a"), b"a").unwrap();
        for p in ["sub/f", "a", "sub"] {
            set_mtime(&d.join(p), mtime);
        }
        d
    };
    let a = mk("a", 2_000_000_000);
    let b = mk("b", 2_100_000_000);
    let opts = LayerOptions::default();
    let (_, d1) = write_layer(&a, Vec::new(), &opts).unwrap();
    let (_, d2) = write_layer(&a, Vec::new(), &opts).unwrap();
    assert_eq!(d1, d2);
    let (_, db) = write_layer(&b, Vec::new(), &opts).unwrap();
    assert_ne!(d1.diff_id, db.diff_id, "mtimes are part of the layer");

    let clamped = opts.source_date_epoch(Some(1_000_000_000));
    let (blob_a, ca) = write_layer(&a, Vec::new(), &clamped).unwrap();
    let (_, cb) = write_layer(&b, Vec::new(), &clamped).unwrap();
    assert_eq!(ca, cb, "both trees clamp to the same mtimes");
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&blob_a[..]));
    for e in ar.entries().unwrap() {
        assert_eq!(e.unwrap().header().mtime().unwrap(), 1_000_000_000);
    }
    // Older mtimes are kept.
    let later = opts.source_date_epoch(Some(2_050_000_000));
    let (blob, _) = write_layer(&a, Vec::new(), &later).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    for e in ar.entries().unwrap() {
        assert_eq!(e.unwrap().header().mtime().unwrap(), 2_000_000_000);
    }
}

#[test]
fn apply_carries_out_whiteouts_and_opaque_dirs() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir_all(rootfs.join("d/sub")).unwrap();
    fs::create_dir_all(rootfs.join("gone-dir/x")).unwrap();
    fs::write(rootfs.join("gone"), b"old").unwrap();
    fs::write(rootfs.join("d/old"), b"old").unwrap();
    fs::write(rootfs.join("d/sub/old"), b"old").unwrap();
    fs::write(rootfs.join("kept"), b"kept").unwrap();
    fs::write(rootfs.join("replaced"), b"old").unwrap();

    let upper = tmp.path().join("upper");
    fs::create_dir_all(upper.join("d")).unwrap();
    fs::write(upper.join("d/new"), b"new").unwrap();
    xattr::set(upper.join("d"), "trusted.overlay.opaque", b"y").unwrap();
    mknod(&upper.join("gone"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    mknod(&upper.join("gone-dir"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    mknod(
        &upper.join("never-existed"),
        SFlag::S_IFCHR,
        Mode::empty(),
        0,
    )
    .unwrap();
    fs::create_dir(upper.join("replaced")).unwrap();
    assert!(!is_empty_diff(&upper).unwrap());

    let (blob, desc) = write_layer(&upper, Vec::new(), &LayerOptions::default()).unwrap();
    let stats = apply_layer(&blob[..], &rootfs).unwrap();
    assert_eq!(stats.diff_id, desc.diff_id);
    assert!(!rootfs.join("gone").exists());
    assert!(!rootfs.join("gone-dir").exists());
    assert!(!rootfs.join("never-existed").exists());
    assert!(!rootfs.join("d/old").exists());
    assert!(!rootfs.join("d/sub").exists());
    assert_eq!(fs::read(rootfs.join("d/new")).unwrap(), b"new");
    assert_eq!(fs::read(rootfs.join("kept")).unwrap(), b"kept");
    assert!(rootfs.join("replaced").is_dir());
    assert!(
        xattr::get(rootfs.join("d"), "trusted.overlay.opaque")
            .unwrap()
            .is_none()
    );
}
