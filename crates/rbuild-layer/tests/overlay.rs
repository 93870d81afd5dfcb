//! The real thing: changes made through a kernel overlay mount are captured from its upperdir
//! by `write_layer`, and the layer reproduces the merged view both ways —
//! `apply_layer` onto a copy of the lower tree, and `unpack_layer` used as an overlay lowerdir.
//!
//! Needs root and overlayfs; mounts live in a private mount namespace (`unshare -m`), so a
//! failing test leaves no mount behind.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use rbuild_layer::{LayerOptions, apply_layer, unpack_layer, write_layer};

/// Runs `script` with `sh -e` in a new mount namespace; `None` when that is impossible here.
fn in_mount_ns(script: &str) -> Option<()> {
    let out = Command::new("unshare")
        .args(["-m", "sh", "-ec", script])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("script failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(())
}

fn cp_a(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Every path below `root` with type, content, mode, owner, mtime, link count and the
/// xattrs outside `trusted.overlay.*`.
fn describe(root: &Path) -> BTreeMap<PathBuf, String> {
    fn rec(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let kind = if m.is_dir() {
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else {
                format!("{:?}", String::from_utf8_lossy(&fs::read(&p).unwrap()))
            };
            let mut xattrs: Vec<String> = xattr::list(&p)
                .unwrap()
                .filter(|k| !k.to_string_lossy().starts_with("trusted.overlay."))
                .map(|k| k.to_string_lossy().into_owned())
                .collect();
            xattrs.sort();
            out.insert(
                p.strip_prefix(root).unwrap().to_owned(),
                format!(
                    "{kind} {:o} {}:{} t={} n={} {xattrs:?}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    m.mtime(),
                    if m.is_dir() { 0 } else { m.nlink() }
                ),
            );
            if m.is_dir() {
                rec(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    rec(root, root, &mut out);
    out
}

#[test]
fn overlay_upperdir_layer_reproduces_the_merged_view() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for overlay mounts");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let [lower, upper, work, merged, snap] =
        ["lower", "upper", "work", "merged", "snap"].map(|d| {
            let p = t.join(d);
            fs::create_dir(&p).unwrap();
            p
        });
    // The lower layer.
    fs::create_dir_all(lower.join("etc")).unwrap();
    fs::create_dir_all(lower.join("bin")).unwrap();
    fs::create_dir_all(lower.join("dir-gone/sub")).unwrap();
    fs::create_dir_all(lower.join("replaced/deep")).unwrap();
    fs::write(lower.join("etc/remove-me"), b"bye").unwrap();
    fs::write(lower.join("etc/changed"), b"old").unwrap();
    fs::write(lower.join("etc/untouched"), b"same").unwrap();
    fs::write(lower.join("dir-gone/sub/f"), b"f").unwrap();
    fs::write(lower.join("replaced/old"), b"old").unwrap();
    fs::write(lower.join("replaced/deep/old"), b"old").unwrap();
    fs::write(lower.join("bin/tool"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(lower.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();

    // A RUN step's worth of changes, made through the kernel overlay.
    let (l, u, w, m, s) = (
        lower.display(),
        upper.display(),
        work.display(),
        merged.display(),
        snap.display(),
    );
    let script = format!(
        "mount -t overlay overlay -o lowerdir={l},upperdir={u},workdir={w},redirect_dir=off,metacopy=off {m}
         rm {m}/etc/remove-me
         rm -r {m}/dir-gone
         rm -r {m}/replaced && mkdir {m}/replaced && echo new > {m}/replaced/new
         echo changed > {m}/etc/changed
         mkdir -p {m}/new/sub && echo x > {m}/new/sub/file
         ln {m}/new/sub/file {m}/new/hard
         ln -s ../etc/changed {m}/new/link
         chmod 4755 {m}/bin/tool
         chown 1000:1000 {m}/new/sub/file
         cp -a {m}/. {s}/
         umount {m}"
    );
    if in_mount_ns(&script).is_none() {
        eprintln!("skipped: cannot mount overlayfs here");
        return;
    }
    let want = describe(&snap);
    assert!(!want.contains_key(Path::new("etc/remove-me")));
    // The kernel recorded what this test is about: whiteouts and an opaque directory.
    use std::os::unix::fs::FileTypeExt;
    let wh = fs::symlink_metadata(upper.join("etc/remove-me")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        xattr::get(upper.join("replaced"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );

    let (blob, desc) = write_layer(&upper, Vec::new(), &LayerOptions::default()).unwrap();

    // Flattening: lower + layer == merged view.
    let rootfs = t.join("rootfs");
    cp_a(&lower, &rootfs);
    let stats = apply_layer(&blob[..], &rootfs).unwrap();
    assert_eq!(stats.diff_id, desc.diff_id);
    assert_eq!(
        stats.whiteouts, 3,
        "etc/remove-me, dir-gone, replaced's opaque marker"
    );
    assert_eq!(describe(&rootfs), want);

    // Upperdir form: the unpacked layer over the lower, as overlay lowerdirs, == merged view.
    let unpacked = t.join("unpacked");
    let snap2 = t.join("snap2");
    fs::create_dir(&unpacked).unwrap();
    fs::create_dir(&snap2).unwrap();
    unpack_layer(&blob[..], &unpacked).unwrap();
    let script = format!(
        "mount -t overlay overlay -o ro,lowerdir={}:{l} {m}
         cp -a {m}/. {}/
         umount {m}",
        unpacked.display(),
        snap2.display()
    );
    assert!(
        in_mount_ns(&script).is_some(),
        "read-only overlay mount failed"
    );
    assert_eq!(describe(&snap2), want);
}
