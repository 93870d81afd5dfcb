//! Cache correctness: no stale hit, and no needless rebuild. Each row builds, changes one input,
//! rebuilds, and asserts both which steps ran and that the image equals a `--no-cache` build of
//! the same inputs (builds are reproducible with `--source-date-epoch`, so digests compare).

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::*;

const EPOCH: &str = "1700000000";

fn build(root: &Path, ctx: &Path, extra: &[&str]) -> String {
    let mut args = vec!["build", "--progress", "plain", "--explain"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    ok(&rbuild(root, &args))
}

/// Steps (by number) that were not taken from the cache.
fn missed(out: &str) -> Vec<usize> {
    out.lines()
        .filter(|l| l.starts_with('[') && !l.contains("] FROM "))
        .filter_map(|l| l[1..].split('/').next()?.parse().ok())
        .collect()
}

/// One row: name, Dockerfile, context set-up, the change, flags of the first build, flags of
/// the second build, the steps expected to run again.
struct Row {
    name: &'static str,
    dockerfile: &'static str,
    setup: fn(&Path),
    change: fn(&Path),
    before: Vec<&'static str>,
    after: Vec<&'static str>,
    expected: Vec<usize>,
}

fn check(root: &Path, work: &Path, row: &Row) {
    let ctx = context_with(work, row.name, row.dockerfile);
    (row.setup)(&ctx);
    build(root, &ctx, &row.before);
    (row.change)(&ctx);
    let out = build(root, &ctx, &row.after);
    assert_eq!(missed(&out), row.expected, "{}:\n{out}", row.name);
    let mut fresh: Vec<&str> = row.after.clone();
    fresh.push("--no-cache");
    let clean = build(root, &ctx, &fresh);
    assert_eq!(
        last_line(&out),
        last_line(&clean),
        "{}: the cached image differs from a --no-cache build",
        row.name
    );
}

fn files(ctx: &Path, list: &[(&str, &str)]) {
    for (p, c) in list {
        let p = ctx.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, c).unwrap();
    }
}

#[test]
fn every_input_a_step_reads_is_in_its_key_and_nothing_else() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let secret_a = work.path().join("secret-a");
    let secret_b = work.path().join("secret-b");
    fs::write(&secret_a, "value-a").unwrap();
    fs::write(&secret_b, "value-b").unwrap();
    let sa = format!("id=a,src={}", secret_a.display());
    let sb = format!("id=b,src={}", secret_b.display());
    let sa: &'static str = Box::leak(sa.into_boxed_str());
    let sb: &'static str = Box::leak(sb.into_boxed_str());
    let e = vec!["--source-date-epoch", EPOCH];
    let rows = vec![
        Row {
            name: "bind-mount-with-a-sibling-that-sorts-first",
            dockerfile: "FROM localhost/busybox:test\nRUN --mount=type=bind,source=src,target=/s cat /s/a > /out\n",
            setup: |c| files(c, &[("src/a", "one"), ("src.txt", "x"), ("src-old/y", "y")]),
            change: |c| files(c, &[("src/a", "two")]),
            before: e.clone(),
            after: e.clone(),
            expected: vec![2],
        },
        Row {
            name: "bind-mount-link-target",
            dockerfile: "FROM localhost/busybox:test\nRUN --mount=type=bind,source=src,target=/s cat /s/l > /out\n",
            setup: |c| {
                files(c, &[("src/a", "A"), ("src/b", "B")]);
                symlink("a", c.join("src/l")).unwrap();
            },
            change: |c| {
                fs::remove_file(c.join("src/l")).unwrap();
                symlink("b", c.join("src/l")).unwrap();
            },
            before: e.clone(),
            after: e.clone(),
            expected: vec![2],
        },
        Row {
            name: "bind-mount-ignored-file",
            dockerfile: "FROM localhost/busybox:test\nRUN --mount=type=bind,source=src,target=/s sh -c 'cat /s/ign 2>/dev/null; cat /s/a' > /out\n",
            setup: |c| {
                files(
                    c,
                    &[
                        ("src/a", "A"),
                        ("src/ign", "secret-1"),
                        (".dockerignore", "src/ign\n"),
                    ],
                );
            },
            change: |c| files(c, &[("src/ign", "secret-2")]),
            before: e.clone(),
            after: e.clone(),
            expected: vec![],
        },
        Row {
            name: "secret-mount-id",
            dockerfile: "FROM localhost/busybox:test\nRUN --mount=type=secret,id=a,target=/s cat /s | wc -c > /out\n",
            setup: |_| {},
            change: |c| {
                let df = fs::read_to_string(c.join("Dockerfile")).unwrap();
                fs::write(c.join("Dockerfile"), df.replace("id=a", "id=b")).unwrap();
            },
            before: vec!["--source-date-epoch", EPOCH, "--secret", sa, "--secret", sb],
            after: vec!["--source-date-epoch", EPOCH, "--secret", sa, "--secret", sb],
            expected: vec![2],
        },
        Row {
            name: "source-date-epoch",
            dockerfile: "FROM localhost/busybox:test\nRUN echo x > /x\nCOPY f /f\n",
            setup: |c| files(c, &[("f", "f")]),
            change: |_| {},
            before: vec![],
            after: e.clone(),
            expected: vec![2, 3],
        },
        Row {
            name: "label-is-config-only",
            dockerfile: "FROM localhost/busybox:test\nLABEL v=1\nRUN echo x > /x\nCOPY f /f\nEXPOSE 80\nRUN echo y > /y\n",
            setup: |c| {
                files(c, &[("f", "f")]);
            },
            change: |c| {
                let df = fs::read_to_string(c.join("Dockerfile")).unwrap();
                let df = df.replace("v=1", "v=2").replace("EXPOSE 80", "EXPOSE 81");
                fs::write(c.join("Dockerfile"), df).unwrap();
            },
            before: e.clone(),
            after: e.clone(),
            expected: vec![2, 5],
        },
        Row {
            name: "arg-unused-by-copy",
            dockerfile: "FROM localhost/busybox:test\nARG A=1\nCOPY f /f\nRUN echo \"$A\" > /a\n",
            setup: |c| files(c, &[("f", "f")]),
            change: |_| {},
            before: e.clone(),
            after: vec!["--source-date-epoch", EPOCH, "--build-arg", "A=2"],
            expected: vec![4],
        },
        Row {
            name: "arg-used-by-copy",
            dockerfile: "FROM localhost/busybox:test\nARG A=f\nCOPY $A /f\nRUN true\n",
            setup: |c| files(c, &[("f", "f"), ("g", "g")]),
            change: |_| {},
            before: e.clone(),
            after: vec!["--source-date-epoch", EPOCH, "--build-arg", "A=g"],
            expected: vec![3, 4],
        },
        Row {
            name: "context-file-owner",
            dockerfile: "FROM localhost/busybox:test\nCOPY d/ /d/\nRUN true\n",
            setup: |c| files(c, &[("d/a", "a")]),
            // Context files land as 0:0 whatever their owner: not an input.
            change: |c| std::os::unix::fs::chown(c.join("d/a"), Some(4321), Some(4321)).unwrap(),
            before: e.clone(),
            after: e.clone(),
            expected: vec![],
        },
        Row {
            name: "context-link-target",
            dockerfile: "FROM localhost/busybox:test\nCOPY d/ /d/\nRUN true\n",
            setup: |c| {
                files(c, &[("d/a", "a")]);
                symlink("a", c.join("d/l")).unwrap();
            },
            change: |c| {
                fs::remove_file(c.join("d/l")).unwrap();
                symlink("b", c.join("d/l")).unwrap();
            },
            before: e.clone(),
            after: e.clone(),
            expected: vec![2, 3],
        },
        Row {
            name: "context-file-added-removed-renamed",
            dockerfile: "FROM localhost/busybox:test\nCOPY d/ /d/\nRUN true\n",
            setup: |c| files(c, &[("d/a", "a"), ("d/b", "b")]),
            change: |c| {
                fs::rename(c.join("d/a"), c.join("d/a2")).unwrap();
                fs::remove_file(c.join("d/b")).unwrap();
                files(c, &[("d/c", "c")]);
            },
            before: e.clone(),
            after: e.clone(),
            expected: vec![2, 3],
        },
        Row {
            name: "context-hardlink",
            dockerfile: "FROM localhost/busybox:test\nCOPY d/ /d/\nRUN true\n",
            setup: |c| files(c, &[("d/a", "a"), ("d/b", "a")]),
            change: |c| {
                fs::remove_file(c.join("d/b")).unwrap();
                fs::hard_link(c.join("d/a"), c.join("d/b")).unwrap();
            },
            before: e.clone(),
            after: e.clone(),
            expected: vec![2, 3],
        },
        Row {
            name: "dockerignore-change",
            dockerfile: "FROM localhost/busybox:test\nCOPY . /c/\n",
            setup: |c| {
                files(
                    c,
                    &[("a", "a"), ("b.log", "b"), (".dockerignore", "*.log\n")],
                )
            },
            change: |c| files(c, &[(".dockerignore", "a\n")]),
            before: e.clone(),
            after: e.clone(),
            expected: vec![2],
        },
        Row {
            name: "env-shell-workdir-user",
            dockerfile: "FROM localhost/busybox:test\nENV A=1\nSHELL [\"/bin/sh\", \"-c\"]\nWORKDIR /w\nUSER root\nRUN echo \"$A\" > a\n",
            setup: |_| {},
            change: |c| {
                let df = fs::read_to_string(c.join("Dockerfile")).unwrap();
                fs::write(
                    c.join("Dockerfile"),
                    df.replace("WORKDIR /w", "WORKDIR /w2"),
                )
                .unwrap();
            },
            before: e.clone(),
            after: e.clone(),
            expected: vec![4, 5, 6],
        },
        Row {
            name: "heredoc-body",
            dockerfile: "FROM localhost/busybox:test\nCOPY <<EOF /h\none\nEOF\nRUN cat /h > /h2\n",
            setup: |_| {},
            change: |c| {
                let df = fs::read_to_string(c.join("Dockerfile")).unwrap();
                fs::write(c.join("Dockerfile"), df.replace("one", "two")).unwrap();
            },
            before: e.clone(),
            after: e.clone(),
            expected: vec![2, 3],
        },
        Row {
            name: "cache-mount-id",
            dockerfile: "FROM localhost/busybox:test\nRUN --mount=type=cache,id=one,target=/c sh -c 'touch /c/x; echo built > /b'\n",
            setup: |_| {},
            change: |c| {
                let df = fs::read_to_string(c.join("Dockerfile")).unwrap();
                fs::write(c.join("Dockerfile"), df.replace("id=one", "id=two")).unwrap();
            },
            before: e.clone(),
            after: e.clone(),
            expected: vec![2],
        },
        Row {
            name: "copy-from-stage-rebuilt-with-the-same-files",
            dockerfile: "FROM localhost/busybox:test AS s\nRUN echo same > /f\nFROM localhost/busybox:test\nCOPY --from=s /f /f\nRUN true\n",
            setup: |_| {},
            change: |_| {},
            before: e.clone(),
            after: vec!["--source-date-epoch", EPOCH, "--no-cache-filter", "s"],
            // Stage s runs again (its lines are `[s 2/2]`, not counted here); the final
            // stage's COPY and RUN hit because the copied file has the same content.
            expected: vec![],
        },
        Row {
            name: "compression",
            dockerfile: "FROM localhost/busybox:test\nRUN echo x > /x\n",
            setup: |_| {},
            change: |_| {},
            before: e.clone(),
            after: vec!["--source-date-epoch", EPOCH, "--compression", "zstd"],
            expected: vec![2],
        },
    ];
    for row in &rows {
        check(&root, work.path(), row);
    }
}

#[test]
fn a_file_edited_during_the_build_is_not_cached_under_its_old_content() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let ctx = context_with(
        work.path(),
        "mid-build",
        "FROM localhost/busybox:test\nRUN sleep 2\nCOPY f /f\n",
    );
    fs::write(ctx.join("f"), "original").unwrap();
    // The keys are computed before the RUN starts: edit f while it runs.
    let mut child = Command::new(bin())
        .args([
            "--root",
            root.to_str().unwrap(),
            "build",
            "--progress",
            "plain",
        ])
        .arg(&ctx)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("RUN sleep 2") {
            break;
        }
    }
    fs::write(ctx.join("f"), "edited!!").unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{rest:?}\n{err}");
    assert!(err.contains("changed during the build"), "{err}");
    // Restored: the next build copies the original, and nothing stale was cached.
    fs::write(ctx.join("f"), "original").unwrap();
    build(&root, &ctx, &["-t", "localhost/mid:1"]);
    let got = ok(&rbuild(
        &root,
        &["run", "localhost/mid:1", "--", "cat", "/f"],
    ));
    assert_eq!(got, "original");
}

#[test]
fn proxy_args_reach_run_without_an_arg_and_stay_out_of_the_key_and_the_image() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let ctx = context_with(
        work.path(),
        "proxy",
        "FROM localhost/busybox:test\nRUN echo \"$HTTP_PROXY\" > /p\n",
    );
    let first = build(
        &root,
        &ctx,
        &[
            "-t",
            "localhost/proxy:1",
            "--build-arg",
            "HTTP_PROXY=http://proxy.invalid:3128",
        ],
    );
    assert_eq!(missed(&first), vec![2], "{first}");
    let got = ok(&rbuild(
        &root,
        &["run", "localhost/proxy:1", "--", "cat", "/p"],
    ));
    assert_eq!(got, "http://proxy.invalid:3128\n");
    let inspect = ok(&rbuild(&root, &["inspect", "localhost/proxy:1"]));
    assert!(!inspect.contains("proxy.invalid"), "{inspect}");
    // Another proxy is the same build (BuildKit leaves proxies out of the cache key).
    let again = build(
        &root,
        &ctx,
        &[
            "-t",
            "localhost/proxy:1",
            "--build-arg",
            "HTTP_PROXY=http://other.invalid:8080",
        ],
    );
    assert_eq!(missed(&again), Vec::<usize>::new(), "{again}");
}

#[test]
fn a_retagged_base_image_and_a_changed_archive_miss_from_where_they_are_read() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    // A second base, then `localhost/base:moving` pointing at one and then the other.
    let alt = context_with(
        work.path(),
        "alt-base",
        "FROM localhost/busybox:test\nRUN echo alt > /alt\n",
    );
    build(&root, &alt, &["-t", "localhost/base:alt"]);
    ok(&rbuild(
        &root,
        &["tag", "localhost/busybox:test", "localhost/base:moving"],
    ));
    let ctx = context_with(
        work.path(),
        "retag",
        "FROM localhost/base:moving\nADD a.tar /x/\nRUN ls /x > /list\n",
    );
    let tar = |name: &str| {
        let src = work.path().join("tar-src");
        let _ = fs::remove_dir_all(&src);
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join(name), name).unwrap();
        sh(Command::new("tar")
            .arg("-C")
            .arg(&src)
            .arg("-cf")
            .arg(ctx.join("a.tar"))
            .arg(name));
    };
    tar("one");
    let e = ["--source-date-epoch", EPOCH];
    build(&root, &ctx, &e);
    assert_eq!(missed(&build(&root, &ctx, &e)), Vec::<usize>::new());
    // The archive's content: the ADD and what follows.
    tar("two");
    let out = build(&root, &ctx, &e);
    assert_eq!(missed(&out), vec![2, 3], "{out}");
    // The base re-tagged: everything.
    ok(&rbuild(
        &root,
        &["tag", "localhost/base:alt", "localhost/base:moving"],
    ));
    let out = build(&root, &ctx, &e);
    assert_eq!(missed(&out), vec![2, 3], "{out}");
    assert!(out.contains("base image changed"), "{out}");
    let clean = build(&root, &ctx, &["--source-date-epoch", EPOCH, "--no-cache"]);
    assert_eq!(last_line(&out), last_line(&clean));
}
