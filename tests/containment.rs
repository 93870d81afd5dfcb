//! Containment: nothing a build reads or writes escapes its root. Each test plants a sentinel
//! directory with a secret file *outside* the context and the store, feeds the build hostile
//! input (symlinks in the context, in a stage, in an image's layers), and proves the sentinel
//! was neither written (its listing and content are unchanged) nor read (the secret's bytes are
//! in no output, in no file of the store, compressed or not).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

const SECRET: &str = "sentinel-secret-7f3a9c";

/// A host directory outside every root, with a secret file.
struct Sentinel {
    dir: PathBuf,
}

impl Sentinel {
    fn plant(work: &Path) -> Self {
        let dir = work.join("host-sentinel");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("secret"), SECRET).unwrap();
        Self { dir }
    }

    fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// Nothing was written into the sentinel directory.
    #[track_caller]
    fn assert_untouched(&self) {
        let names: Vec<String> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["secret"],
            "something was written into the host directory"
        );
        assert_eq!(fs::read_to_string(self.dir.join("secret")).unwrap(), SECRET);
    }

    /// The secret is in none of the outputs and in no file of the store (blobs decompressed).
    #[track_caller]
    fn assert_not_read(&self, root: &Path, outputs: &[&Output]) {
        for o in outputs {
            assert!(
                !stdout(o).contains(SECRET) && !stderr(o).contains(SECRET),
                "the secret reached the output"
            );
        }
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "find '{}' -type f -exec sh -c 'for f; do zcat -f \"$f\" 2>/dev/null; cat \"$f\"; done' _ {{}} + | grep -c '{SECRET}'",
                root.display()
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&found.stdout).trim(),
            "0",
            "the secret is stored in {}",
            root.display()
        );
    }
}

fn build(root: &Path, ctx: &Path, tag: &str) -> Output {
    rbuild(
        root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            tag,
            ctx.to_str().unwrap(),
        ],
    )
}

fn setup() -> Option<(tempfile::TempDir, PathBuf, Sentinel)> {
    let (work, root) = setup_with_base()?;
    let s = Sentinel::plant(work.path());
    Some((work, root, s))
}

fn run_cat(root: &Path, image: &str, args: &[&str]) -> Output {
    let mut a = vec!["run", image, "--"];
    a.extend_from_slice(args);
    rbuild(root, &a)
}

#[test]
fn copy_of_two_dirs_does_not_write_through_a_context_symlink() {
    let Some((work, root, s)) = setup() else {
        return;
    };
    let ctx = context_with(work.path(), "two-dirs", "FROM scratch\nCOPY a/ b/ /out/\n");
    fs::create_dir_all(ctx.join("a")).unwrap();
    symlink(s.path(), ctx.join("a/x")).unwrap();
    fs::create_dir_all(ctx.join("b/x")).unwrap();
    fs::write(ctx.join("b/x/evil"), "evil").unwrap();
    let o = build(&root, &ctx, "localhost/contain:two-dirs");
    s.assert_untouched();
    s.assert_not_read(&root, &[&o]);
    // docker would follow /out/x inside the image: the file lands there, in the image.
    if o.status.success() {
        let save = work.path().join("saved");
        ok(&rbuild(
            &root,
            &[
                "save",
                "localhost/contain:two-dirs",
                "-o",
                save.to_str().unwrap(),
            ],
        ));
    }
}

#[test]
fn copy_from_a_stage_does_not_follow_its_links_onto_the_host() {
    let Some((work, root, s)) = setup() else {
        return;
    };
    let ctx = context_with(
        work.path(),
        "stage-link",
        "FROM scratch AS s\nCOPY d/ /\nFROM scratch\nCOPY --from=s /link/secret /stolen\n",
    );
    fs::create_dir_all(ctx.join("d")).unwrap();
    symlink(s.path(), ctx.join("d/link")).unwrap();
    let o = build(&root, &ctx, "localhost/contain:stage-link");
    assert!(
        !o.status.success(),
        "the link leads nowhere inside the stage"
    );
    assert!(stderr(&o).contains("Dockerfile:4"), "{}", stderr(&o));
    s.assert_untouched();
    s.assert_not_read(&root, &[&o]);
}

#[test]
fn a_link_in_an_upper_layer_hides_the_lower_layers_directory() {
    let Some((work, root, s)) = setup() else {
        return;
    };
    // Stage s: /app/d/evil in one layer, then /app/d replaced by a link to the host directory.
    let ctx = context_with(
        work.path(),
        "layers",
        "FROM scratch AS s\nCOPY lower/ /app/\nCOPY upper/ /app/\n\
         FROM localhost/busybox:test\nCOPY --from=s /app/ /app/\n",
    );
    fs::create_dir_all(ctx.join("lower/d")).unwrap();
    fs::write(ctx.join("lower/d/evil"), "evil").unwrap();
    fs::create_dir_all(ctx.join("upper")).unwrap();
    symlink(s.path(), ctx.join("upper/d")).unwrap();
    let o = build(&root, &ctx, "localhost/contain:layers");
    let out = ok(&o);
    s.assert_untouched();
    s.assert_not_read(&root, &[&o]);
    // As overlayfs shows it: /app/d is the link, nothing of the lower directory shows through.
    let ls = ok(&run_cat(
        &root,
        "localhost/contain:layers",
        &["sh", "-c", "readlink /app/d; ls -a /app"],
    ));
    assert_eq!(ls, format!("{}\n.\n..\nd\n", s.path()), "{out}");
}

#[test]
fn copy_into_a_dir_replaced_by_a_link_stays_in_the_image() {
    let Some((work, root, s)) = setup() else {
        return;
    };
    let proc_link = format!("/proc/self/root{}", s.path());
    let dotdot = format!("../../../../../../../..{}", s.path());
    let ctx = context_with(
        work.path(),
        "dest-links",
        "FROM localhost/busybox:test AS a\nRUN mkdir /d\n\
         FROM a\nCOPY links/ /\n\
         COPY f.txt /d/\nCOPY f.txt /p/\nCOPY f.txt /up/\nCOPY f.txt /chain/\n",
    );
    fs::create_dir_all(ctx.join("links")).unwrap();
    symlink(s.path(), ctx.join("links/d")).unwrap();
    symlink(&proc_link, ctx.join("links/p")).unwrap();
    symlink(&dotdot, ctx.join("links/up")).unwrap();
    symlink("c1", ctx.join("links/chain")).unwrap();
    symlink("/c2", ctx.join("links/c1")).unwrap();
    symlink("d", ctx.join("links/c2")).unwrap();
    fs::write(ctx.join("f.txt"), "payload").unwrap();
    let o = build(&root, &ctx, "localhost/contain:dest-links");
    ok(&o);
    s.assert_untouched();
    s.assert_not_read(&root, &[&o]);
    // Each write landed where the link leads *inside* the image.
    let inside = |p: &str| {
        ok(&run_cat(
            &root,
            "localhost/contain:dest-links",
            &["cat", &format!("{p}/f.txt")],
        ))
    };
    assert_eq!(inside(s.path()), "payload");
    // /proc/self/root/... is a plain directory path of the image (the run mounts procfs over
    // /proc, so look at the layers instead).
    let saved = work.path().join("dest-links-saved");
    ok(&rbuild(
        &root,
        &[
            "save",
            "localhost/contain:dest-links",
            "-o",
            saved.to_str().unwrap(),
            "--format",
            "oci-dir",
        ],
    ));
    let listing = sh(Command::new("sh").arg("-c").arg(format!(
        "for b in '{}'/blobs/sha256/*; do tar -tzf \"$b\" 2>/dev/null; done; true",
        saved.display()
    )));
    let want = format!("{}/f.txt", proc_link.trim_start_matches('/'));
    assert!(
        listing.lines().any(|l| l == want),
        "{want} not in the layers:\n{listing}"
    );
}

#[test]
fn bind_mounts_are_snapshots_inside_the_context() {
    let Some((work, root, s)) = setup() else {
        return;
    };
    // A mount source that links out of the context is resolved inside it: not there.
    let ctx = context_with(
        work.path(),
        "bind-link",
        "FROM localhost/busybox:test\n\
         RUN --mount=type=bind,source=hostlink,target=/m sh -c 'cat /m/secret; ls /m; true'\n",
    );
    symlink(s.path(), ctx.join("hostlink")).unwrap();
    let o = build(&root, &ctx, "localhost/contain:bind-link");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("hostlink"), "{}", stderr(&o));
    s.assert_untouched();
    s.assert_not_read(&root, &[&o]);

    // Writes through a read-write bind, or through a read-only one remounted, never reach the
    // context; what .dockerignore excludes is not in the mount.
    let ctx = context_with(
        work.path(),
        "binds",
        "FROM localhost/busybox:test\n\
         RUN --mount=type=bind,source=.,target=/m,rw sh -c 'echo changed > /m/data.txt; echo new > /m/new.txt'\n\
         RUN --mount=type=bind,source=.,target=/m sh -c 'mount -o remount,rw /m 2>/dev/null; echo changed > /m/data.txt 2>/dev/null; cat /m/ignored.txt 2>&1; true' > /out2\n",
    );
    fs::write(ctx.join("data.txt"), "original").unwrap();
    fs::write(ctx.join("ignored.txt"), "ignored-content").unwrap();
    fs::write(ctx.join(".dockerignore"), "ignored.txt\n").unwrap();
    let o = build(&root, &ctx, "localhost/contain:binds");
    ok(&o);
    assert_eq!(
        fs::read_to_string(ctx.join("data.txt")).unwrap(),
        "original"
    );
    assert!(!ctx.join("new.txt").exists());
    let out2 = ok(&run_cat(
        &root,
        "localhost/contain:binds",
        &["cat", "/out2"],
    ));
    assert!(!out2.contains("ignored-content"), "{out2}");

    let climb = context_with(
        work.path(),
        "climb",
        "FROM localhost/busybox:test\nRUN --mount=type=bind,source=../..,target=/m ls /m\n",
    );
    let o = build(&root, &climb, "localhost/contain:climb");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Dockerfile:2"), "{}", stderr(&o));
    s.assert_untouched();
}

#[test]
fn a_dockerfile_that_links_out_of_the_context_is_not_read() {
    let Some((work, root, s)) = setup() else {
        return;
    };
    fs::write(
        s.dir.join("secret"),
        format!("FROM scratch\nLABEL x={SECRET}\n"),
    )
    .unwrap();
    let ctx = work.path().join("df-link");
    fs::create_dir_all(&ctx).unwrap();
    symlink(s.dir.join("secret"), ctx.join("Dockerfile")).unwrap();
    let o = build(&root, &ctx, "localhost/contain:df");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Dockerfile"), "{}", stderr(&o));
    assert!(!stderr(&o).contains(SECRET) && !stdout(&o).contains(SECRET));
    // A .dockerignore that links out is not followed either.
    let ctx2 = context_with(work.path(), "ignore-link", "FROM scratch\nCOPY . /\n");
    symlink(s.dir.join("secret"), ctx2.join(".dockerignore")).unwrap();
    let o2 = build(&root, &ctx2, "localhost/contain:ignore");
    assert!(!stderr(&o2).contains(SECRET) && !stdout(&o2).contains(SECRET));
}
