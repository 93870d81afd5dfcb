//! Dockerfile semantics where rbuild must build the image BuildKit builds: one regression test
//! per behaviour that once differed (COPY into symlinked and existing directories, ownership,
//! ADD of an archive, source symlinks, EXPOSE ranges, RUN's HOME, hard links).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use crate::support::*;

fn build(root: &Path, ctx: &Path, tag: &str) -> String {
    ok(&rbuild(
        root,
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            tag,
            ctx.to_str().unwrap(),
        ],
    ))
}

fn sh_in(root: &Path, image: &str, script: &str) -> String {
    ok(&rbuild(root, &["run", image, "--", "sh", "-c", script]))
}

#[test]
fn copy_into_a_symlinked_directory_follows_the_link_inside_the_image() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let ctx = context_with(
        work.path(),
        "symlinked-dest",
        "FROM localhost/busybox:test\nCOPY tree/ /\nCOPY tool /usr/local/bin/\n\
         WORKDIR /usr/local/bin/sub\nADD tool /usr/local/bin/added\n",
    );
    fs::create_dir_all(ctx.join("tree/usr/local")).unwrap();
    fs::create_dir_all(ctx.join("tree/opt/bin")).unwrap();
    fs::write(ctx.join("tree/opt/bin/existing"), "old").unwrap();
    symlink("/opt/bin", ctx.join("tree/usr/local/bin")).unwrap();
    fs::write(ctx.join("tool"), "new").unwrap();
    build(&root, &ctx, "localhost/sem:symlinked");
    let out = sh_in(
        &root,
        "localhost/sem:symlinked",
        "readlink /usr/local/bin; ls /opt/bin",
    );
    assert_eq!(out, "/opt/bin\nadded\nexisting\nsub\ntool\n");
}

#[test]
fn copy_onto_a_directory_made_earlier_in_the_stage_copies_into_it() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let ctx = context_with(
        work.path(),
        "earlier-dir",
        "FROM localhost/busybox:test\nRUN mkdir /d && echo keep > /d/keep\nCOPY a.txt /d\n\
         WORKDIR /w\nCOPY a.txt /w\n",
    );
    fs::write(ctx.join("a.txt"), "a").unwrap();
    build(&root, &ctx, "localhost/sem:earlier");
    let out = sh_in(
        &root,
        "localhost/sem:earlier",
        "cat /d/keep /d/a.txt /w/a.txt",
    );
    assert_eq!(out, "keep\naa");
}

#[test]
fn chown_sees_users_made_by_earlier_steps_and_numeric_ids_keep_their_group() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let ctx = context_with(
        work.path(),
        "chown",
        "FROM localhost/busybox:test\n\
         RUN echo 'svc:x:2001:2002::/home/svc:/bin/sh' >> /etc/passwd && echo 'svcg:x:2002:' >> /etc/group\n\
         COPY --chown=svc a.txt /by-name\nCOPY --chown=1234 a.txt /by-id\nCOPY --chown=1234:5 a.txt /by-pair\n",
    );
    fs::write(ctx.join("a.txt"), "a").unwrap();
    build(&root, &ctx, "localhost/sem:chown");
    let out = sh_in(
        &root,
        "localhost/sem:chown",
        "stat -c '%u:%g' /by-name /by-id /by-pair",
    );
    assert_eq!(out, "2001:2002\n1234:1234\n1234:5\n");
}

#[test]
fn add_of_an_archive_to_a_missing_destination_extracts_into_it() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let ctx = context_with(
        work.path(),
        "add-archive",
        "FROM localhost/busybox:test\nADD app.tar /opt2\n",
    );
    let src = work.path().join("tar-src");
    fs::create_dir_all(src.join("bin")).unwrap();
    fs::write(src.join("bin/app"), "app").unwrap();
    sh(std::process::Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(ctx.join("app.tar"))
        .arg("bin"));
    build(&root, &ctx, "localhost/sem:add");
    assert_eq!(
        sh_in(&root, "localhost/sem:add", "cat /opt2/bin/app"),
        "app"
    );
}

#[test]
fn a_source_symlink_is_followed_inside_the_context_and_inner_links_stay_links() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let ctx = context_with(
        work.path(),
        "src-links",
        "FROM localhost/busybox:test\nCOPY link.txt /x\nCOPY dirlink /d/\nCOPY l*.txt /w/\n",
    );
    fs::write(ctx.join("target.txt"), "target").unwrap();
    symlink("target.txt", ctx.join("link.txt")).unwrap();
    fs::create_dir_all(ctx.join("real")).unwrap();
    fs::write(ctx.join("real/f"), "f").unwrap();
    symlink("f", ctx.join("real/inner")).unwrap();
    symlink("/real", ctx.join("dirlink")).unwrap();
    build(&root, &ctx, "localhost/sem:links");
    let out = sh_in(
        &root,
        "localhost/sem:links",
        "[ -L /x ] && echo link; cat /x; echo; readlink /d/inner; cat /d/f; echo; [ -L /w/link.txt ] || cat /w/link.txt",
    );
    assert_eq!(out, "target\nf\nf\ntarget");
    // A source link that leads out of the context is an error that names it.
    let bad = context_with(
        work.path(),
        "src-out",
        "FROM localhost/busybox:test\nCOPY out.txt /x\n",
    );
    symlink("/etc/hostname", bad.join("out.txt")).unwrap();
    let o = rbuild(
        &root,
        &["build", "--progress", "plain", bad.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Dockerfile:2") && stderr(&o).contains("out.txt"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn copy_from_keeps_owners_and_hard_links_stay_linked() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let ctx = context_with(
        work.path(),
        "owners",
        "FROM localhost/busybox:test AS a\nCOPY --chown=5:6 f /f\nRUN chown 7:8 /f && mkdir /dir && chown 9:10 /dir\n\
         FROM localhost/busybox:test\nCOPY --from=a /f /g\nCOPY --from=a /dir /dir\nCOPY links/ /h/\n",
    );
    fs::write(ctx.join("f"), "f").unwrap();
    fs::create_dir_all(ctx.join("links")).unwrap();
    fs::write(ctx.join("links/a"), "same").unwrap();
    fs::hard_link(ctx.join("links/a"), ctx.join("links/b")).unwrap();
    fs::hard_link(ctx.join("links/a"), ctx.join("links/c")).unwrap();
    build(&root, &ctx, "localhost/sem:owners");
    let out = sh_in(
        &root,
        "localhost/sem:owners",
        "stat -c '%u:%g' /g /dir; stat -c '%i %h' /h/a /h/b /h/c | sort -u",
    );
    let lines: Vec<&str> = out.lines().collect();
    // The destination directory is made, not given the source directory's owner (BuildKit
    // copies a directory's contents).
    assert_eq!(&lines[..2], ["7:8", "0:0"], "{out}");
    assert_eq!(lines.len(), 3, "one inode for the three links: {out}");
    assert!(lines[2].ends_with(" 3"), "{out}");
}

#[test]
fn expose_ranges_and_run_home() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let ctx = context_with(
        work.path(),
        "expose-home",
        "FROM localhost/busybox:test\nEXPOSE 9000-9002/udp 80\nRUN echo \"$HOME\" > /root-home\n\
         USER app\nRUN echo \"$HOME\" > /tmp/app-home && grep ^Groups: /proc/self/status > /tmp/app-groups\nUSER 4242\nRUN echo \"$HOME\" > /tmp/unknown-home\n",
    );
    build(&root, &ctx, "localhost/sem:expose");
    let cfg = ok(&rbuild(&root, &["inspect", "localhost/sem:expose"]));
    for port in ["9000/udp", "9001/udp", "9002/udp", "80/tcp"] {
        assert!(
            cfg.contains(&format!("\"{port}\"")),
            "{port} missing: {cfg}"
        );
    }
    let ports = cfg
        .split("\"ExposedPorts\"")
        .nth(1)
        .and_then(|r| r.split('}').next())
        .unwrap_or("");
    assert!(!ports.contains("9000-9002"), "{cfg}");
    let out = sh_in(
        &root,
        "localhost/sem:expose",
        "cat /root-home /tmp/app-home /tmp/unknown-home",
    );
    assert_eq!(out, "/root\n/home/app\n/\n");
    // The primary group is among a non-root step's supplementary groups (BuildKit).
    let groups = sh_in(&root, "localhost/sem:expose", "cat /tmp/app-groups");
    assert_eq!(
        groups.split_whitespace().collect::<Vec<_>>(),
        ["Groups:", "1000"]
    );
}

#[test]
fn an_empty_wildcard_copies_nothing_but_a_missing_path_is_an_error() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let ctx = context_with(
        work.path(),
        "wildcards",
        "FROM localhost/busybox:test\nCOPY *.nothing /x/\n",
    );
    build(&root, &ctx, "localhost/sem:wild");
    let bad = context_with(
        work.path(),
        "missing",
        "FROM localhost/busybox:test\nCOPY nothing.txt /x/\n",
    );
    let o = rbuild(
        &root,
        &["build", "--progress", "plain", bad.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nothing.txt"), "{}", stderr(&o));
}
