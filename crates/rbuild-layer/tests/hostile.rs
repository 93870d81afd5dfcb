//! Layer tarballs crafted byte by byte (the `tar` crate's builder refuses to write the hostile
//! ones): each hostile one must be refused with an error naming the entry, by both
//! `unpack_layer` and `apply_layer`, and nothing may appear or change outside the root. The
//! last tests cover legitimate entry orders other writers produce.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use rbuild_layer::{Error, apply_layer, unpack_layer};
use tar::{EntryType, Header};

/// A tar written from raw headers.
#[derive(Default)]
struct RawTar(Vec<u8>);

impl RawTar {
    fn entry(mut self, name: &str, kind: EntryType, link: &str, data: &[u8]) -> Self {
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(name, EntryType::Regular, "", data)
    }

    fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(name, EntryType::Symlink, target, b"")
    }

    fn hardlink(self, name: &str, target: &str) -> Self {
        self.entry(name, EntryType::Link, target, b"")
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

/// `parent/` holds `root/` (the target) and `sentinel/keep`; nothing else may appear.
struct Fixture {
    _tmp: tempfile::TempDir,
    parent: PathBuf,
    root: PathBuf,
    sentinel: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().join("parent");
        let root = parent.join("root");
        let sentinel = parent.join("sentinel");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&sentinel).unwrap();
        fs::write(sentinel.join("keep"), b"sentinel").unwrap();
        Self {
            _tmp: tmp,
            parent,
            root,
            sentinel,
        }
    }

    fn assert_outside_untouched(&self) {
        let names: BTreeSet<_> = fs::read_dir(&self.parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, BTreeSet::from(["root".into(), "sentinel".into()]));
        let names: Vec<_> = fs::read_dir(&self.sentinel)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["keep"]);
        assert_eq!(fs::read(self.sentinel.join("keep")).unwrap(), b"sentinel");
    }
}

type Extract = fn(&[u8], &Path) -> Result<rbuild_layer::UnpackStats, Error>;

const READERS: [(&str, Extract); 2] = [
    ("unpack", |b, p| unpack_layer(b, p)),
    ("apply", |b, p| apply_layer(b, p)),
];

/// Runs both readers on the blob `make(sentinel)` builds, each in a fresh fixture.
fn assert_refused_with(entry: &str, make: impl Fn(&str) -> Vec<u8>) {
    let passwd = fs::read("/etc/passwd").ok();
    for (reader, extract) in READERS {
        let fx = Fixture::new();
        let blob = make(fx.sentinel.to_str().unwrap());
        match extract(&blob, &fx.root) {
            Err(err @ Error::Refused { .. }) => {
                let Error::Refused { entry: e, reason } = &err else {
                    unreachable!()
                };
                assert_eq!(e, entry, "{reader}: wrong entry named ({reason})");
                assert!(err.to_string().contains(entry), "{err}");
            }
            other => panic!("{reader}: `{entry}` not refused: {other:?}"),
        }
        fx.assert_outside_untouched();
        assert_eq!(
            fs::read("/etc/passwd").ok(),
            passwd,
            "{reader}: /etc/passwd changed"
        );
    }
}

fn assert_refused(blob: &[u8], entry: &str) {
    assert_refused_with(entry, |_| blob.to_vec());
}

#[test]
fn dotdot_entry_is_refused() {
    assert_refused(&RawTar::default().file("../x", b"pwned").finish(), "../x");
}

#[test]
fn absolute_entry_climbing_out_is_refused() {
    assert_refused(
        &RawTar::default().file("/abs/../../x", b"pwned").finish(),
        "/abs/../../x",
    );
}

#[test]
fn absolute_entry_lands_inside_the_root() {
    for (reader, extract) in READERS {
        let fx = Fixture::new();
        let blob = RawTar::default().file("/abs/file", b"inside").finish();
        extract(&blob, &fx.root).unwrap_or_else(|e| panic!("{reader}: {e}"));
        assert_eq!(fs::read(fx.root.join("abs/file")).unwrap(), b"inside");
        fx.assert_outside_untouched();
    }
}

#[test]
fn write_through_symlink_created_by_the_same_tar_is_refused() {
    // Absolute symlink to a directory outside the root, then a file through it.
    assert_refused_with("a/x", |sentinel| {
        RawTar::default()
            .symlink("a", sentinel)
            .file("a/x", b"pwned")
            .finish()
    });
    // Relative symlink to the parent of the root.
    let blob = RawTar::default()
        .symlink("a", "..")
        .file("a/x", b"pwned")
        .finish();
    assert_refused(&blob, "a/x");
    // The classic: `a -> /` then `a/etc/passwd` (checked against the real /etc/passwd).
    let blob = RawTar::default()
        .symlink("a", "/")
        .file("a/etc/passwd", b"pwned")
        .finish();
    assert_refused(&blob, "a/etc/passwd");
}

#[test]
fn write_through_symlink_already_in_the_root_is_refused() {
    for (reader, extract) in READERS {
        let fx = Fixture::new();
        std::os::unix::fs::symlink(&fx.sentinel, fx.root.join("pre")).unwrap();
        let blob = RawTar::default().file("pre/keep", b"pwned").finish();
        let err = extract(&blob, &fx.root).unwrap_err();
        assert!(
            matches!(&err, Error::Refused { entry, .. } if entry == "pre/keep"),
            "{reader}: {err:?}"
        );
        fx.assert_outside_untouched();
    }
}

#[test]
fn hardlink_out_of_the_root_is_refused() {
    let blob = RawTar::default().hardlink("l", "../../etc/passwd").finish();
    assert_refused(&blob, "l");
    let blob = RawTar::default()
        .hardlink("l", "/../sentinel/keep")
        .finish();
    assert_refused(&blob, "l");
    // Through a symlink: linkat would resolve `a` for us.
    assert_refused_with("l", |sentinel| {
        RawTar::default()
            .symlink("a", sentinel)
            .hardlink("l", "a/keep")
            .finish()
    });
}

#[test]
fn whiteouts_naming_outside_paths_are_refused() {
    assert_refused(
        &RawTar::default().file("../.wh.x", b"").finish(),
        "../.wh.x",
    );
    assert_refused(&RawTar::default().file(".wh..", b"").finish(), ".wh..");
    for name in ["a/.wh.keep", "a/.wh..wh..opq"] {
        assert_refused_with(name, |sentinel| {
            RawTar::default()
                .symlink("a", sentinel)
                .file(name, b"")
                .finish()
        });
    }
}

#[test]
fn symlink_targets_are_stored_not_followed() {
    // A symlink pointing outside is legitimate content (e.g. `/etc/alternatives/...`): it is
    // created as is, and a later hard link to the symlink links the symlink itself.
    for (reader, extract) in READERS {
        let fx = Fixture::new();
        let blob = RawTar::default()
            .symlink("out", "../sentinel/keep")
            .hardlink("out2", "out")
            .finish();
        extract(&blob, &fx.root).unwrap_or_else(|e| panic!("{reader}: {e}"));
        assert_eq!(
            fs::read_link(fx.root.join("out2")).unwrap(),
            Path::new("../sentinel/keep")
        );
        fx.assert_outside_untouched();
    }
}

#[test]
fn opaque_marker_after_children_keeps_them() {
    // Writers that sort whole paths put `d/.wh..wh..opq` after `d/-new`: the marker hides the
    // lower layers' `d/old`, not this layer's own entries.
    let fx = Fixture::new();
    fs::create_dir(fx.root.join("d")).unwrap();
    fs::write(fx.root.join("d/old"), b"old").unwrap();
    let blob = RawTar::default()
        .entry("d/", EntryType::Directory, "", b"")
        .file("d/-new", b"new")
        .file("d/.wh..wh..opq", b"")
        .file(".wh.d", b"")
        .finish();
    apply_layer(&blob[..], &fx.root).unwrap();
    assert!(!fx.root.join("d/old").exists());
    assert_eq!(fs::read(fx.root.join("d/-new")).unwrap(), b"new");
    fx.assert_outside_untouched();
}

#[test]
fn whiteout_then_directory_unpacks_as_opaque() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for mknod and trusted.* xattrs");
        return;
    }
    let fx = Fixture::new();
    let blob = RawTar::default()
        .file(".wh.d", b"")
        .entry("d/", EntryType::Directory, "", b"")
        .file("d/f", b"f")
        .finish();
    unpack_layer(&blob[..], &fx.root).unwrap();
    assert!(fx.root.join("d").is_dir());
    assert_eq!(
        xattr::get(fx.root.join("d"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    fx.assert_outside_untouched();
}
