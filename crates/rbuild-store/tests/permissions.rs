//! A store made by root, seen by another local user: nothing in it can be listed, read or run
//! (the class of docker's CVE-2021-41091, where a world-traversable data root let any user run
//! a setuid-root binary from an image's unpacked layer).
//!
//! The other user is `nobody` (65534), entered with util-linux `setpriv`; the tests need root
//! and skip with a reason otherwise (they fail instead under CI, `RBUILD_REQUIRE_SANDBOX`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;
use std::process::{Command, Output};

use rbuild_oci::Digest;
use rbuild_store::Store;

const SECRET: &str = "LAYER-CONTENT-7f3a9c";

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let why = format!("{test}: skipped: needs root to make a store another user is kept out of");
    assert!(
        std::env::var_os("RBUILD_REQUIRE_SANDBOX").is_none(),
        "{why}"
    );
    eprintln!("{why}");
    false
}

/// Runs `args` as `nobody` with no supplementary groups.
///
/// Through `sh`: setpriv keeps its capabilities (`PR_SET_KEEPCAPS`) until its own `execve`,
/// so a path it executes directly is resolved with root's `CAP_DAC_OVERRIDE`; the shell runs
/// with none, as a real local user would.
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["/bin/sh", "-c", "\"$@\"", "sh"])
        .args(args)
        .output()
        .expect("setpriv (util-linux) runs")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A temp directory `nobody` may traverse, so that only the store's own modes keep it out
/// (`tempfile` makes 0700 directories, which would make the test pass for the wrong reason).
fn open_parent() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A store with one unpacked layer holding a readable file and a setuid-root copy of `id`,
/// plus a cache-mount directory and a staging directory in use.
fn populated_store(root: &Path) -> (Store, std::path::PathBuf, rbuild_store::Staging) {
    let store = Store::open(root).unwrap();
    let staging = store.staging().unwrap();
    let upper = staging.upper();
    fs::write(upper.join("secret.txt"), SECRET).unwrap();
    fs::set_permissions(upper.join("secret.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    let id = ["/usr/bin/id", "/bin/id"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("coreutils id");
    fs::copy(id, upper.join("suid-id")).unwrap();
    chown(upper.join("suid-id"), Some(0), Some(0)).unwrap();
    fs::set_permissions(upper.join("suid-id"), fs::Permissions::from_mode(0o4755)).unwrap();
    let layer = store
        .commit_layer_dir(staging, &Digest::sha256_of(b"permissions test layer"))
        .unwrap();
    let cache = store.mounts_dir().join("cache/abc");
    fs::create_dir_all(&cache).unwrap();
    fs::write(cache.join("f"), SECRET).unwrap();
    let live = store.staging().unwrap();
    fs::write(live.upper().join("f"), SECRET).unwrap();
    (store, layer, live)
}

#[test]
fn another_user_can_read_nothing_in_a_store_made_by_root() {
    if !root_or_skip("another_user_can_read_nothing_in_a_store_made_by_root") {
        return;
    }
    let parent = open_parent();
    // Control: nobody can read a plain file beside the store, so a denial below comes from the
    // store's modes, not from the test's setup.
    let control = parent.path().join("control.txt");
    fs::write(&control, "readable").unwrap();
    fs::set_permissions(&control, fs::Permissions::from_mode(0o644)).unwrap();
    let o = as_nobody(&["cat", control.to_str().unwrap()]);
    assert!(o.status.success(), "control read failed: {}", text(&o));

    let root = parent.path().join("store");
    let (store, layer, live) = populated_store(&root);
    for d in [
        root.clone(),
        root.join("layers"),
        root.join("tmp"),
        root.join("mounts"),
    ] {
        let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }

    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let attempts: Vec<Vec<String>> = vec![
        vec!["ls".into(), s(&root)],
        vec!["ls".into(), s(&root.join("layers"))],
        vec!["ls".into(), s(&layer)],
        vec!["cat".into(), s(&layer.join("secret.txt"))],
        vec!["cat".into(), s(&root.join("index.json"))],
        vec!["ls".into(), s(&root.join("blobs/sha256"))],
        vec!["cat".into(), s(&store.mounts_dir().join("cache/abc/f"))],
        vec!["cat".into(), s(&live.upper().join("f"))],
        // The setuid binary: if it ran, it would print euid=0.
        vec![s(&layer.join("suid-id"))],
    ];
    for args in &attempts {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = as_nobody(&argv);
        let out = text(&o);
        assert!(!o.status.success(), "{argv:?} succeeded as nobody: {out}");
        assert!(out.contains("Permission denied"), "{argv:?}: {out}");
        assert!(!out.contains(SECRET), "{argv:?} read layer content: {out}");
        assert!(!out.contains("euid=0"), "{argv:?} ran setuid: {out}");
    }
}

#[test]
fn opening_a_store_made_world_readable_locks_it_again() {
    if !root_or_skip("opening_a_store_made_world_readable_locks_it_again") {
        return;
    }
    let parent = open_parent();
    let root = parent.path().join("store");
    let (_store, layer, _live) = populated_store(&root);
    // A store as older versions made it: everything 0755.
    for d in ["", "layers", "tmp", "mounts"] {
        fs::set_permissions(root.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Control: in that state the setuid binary is reachable and runs with euid 0. This is the
    // hole the modes close, and shows the check below can fail.
    let suid = layer.join("suid-id");
    let o = as_nobody(&[suid.to_str().unwrap()]);
    assert!(
        o.status.success() && text(&o).contains("euid=0"),
        "{}",
        text(&o)
    );

    Store::open(&root).unwrap();
    for d in ["", "layers", "tmp", "mounts"] {
        let mode = fs::metadata(root.join(d)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{d}");
    }
    let o = as_nobody(&[suid.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Permission denied"), "{}", text(&o));
    assert!(!text(&o).contains("euid=0"), "{}", text(&o));
}
