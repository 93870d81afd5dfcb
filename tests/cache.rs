//! The build cache: exactly-right invalidation (one row per input kind), `--explain`, and a
//! remote cache shared by two stores through a real registry process.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rbuild_testkit::registry::{Registry, RegistryOptions};

use crate::support::*;

const DOCKERFILE: &str = "FROM localhost/busybox:test
ARG MODE=dev
RUN echo prepare > /prepared
COPY app/ /app/
RUN echo \"$MODE\" > /mode
ENV LEVEL=1
CMD [\"cat\", \"/mode\"]
";

fn write_context(ctx: &Path) {
    fs::create_dir_all(ctx.join("app")).unwrap();
    fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    fs::write(ctx.join("app/main.sh"), "echo main\n").unwrap();
    fs::write(ctx.join("app/lib.sh"), "echo lib\n").unwrap();
    fs::write(ctx.join("notes.log"), "ignored\n").unwrap();
    fs::write(ctx.join(".dockerignore"), "*.log\n").unwrap();
}

/// Steps (by number) that were not taken from the cache.
fn missed(out: &str) -> Vec<usize> {
    out.lines()
        .filter(|l| l.starts_with('[') && !l.contains("] FROM "))
        .filter_map(|l| l[1..].split('/').next()?.parse().ok())
        .collect()
}

/// One invalidation case: what changes, how, extra flags, steps expected to run, explain text.
type Row = (
    &'static str,
    Change,
    Vec<&'static str>,
    Vec<usize>,
    &'static str,
);
type Change = Box<dyn Fn(&Path)>;

fn build(root: &Path, ctx: &Path, extra: &[&str]) -> String {
    let mut args = vec!["build", "--progress", "plain", "--explain"];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    ok(&rbuild(root, &args))
}

#[test]
fn each_input_invalidates_exactly_from_the_step_it_reaches() {
    if !can_build() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    build_base(&root, work.path());
    let ctx = work.path().join("ctx");
    write_context(&ctx);
    build(&root, &ctx, &[]);

    // (what changes, the change, extra build flags, the steps expected to run, the --explain
    // text expected for the first miss)
    let rows: Vec<Row> = vec![
        ("nothing", Box::new(|_| {}), vec![], vec![], ""),
        (
            "a file excluded by .dockerignore",
            Box::new(|c| fs::write(c.join("notes.log"), "changed\n").unwrap()),
            vec![],
            vec![],
            "",
        ),
        (
            "content of a copied file",
            Box::new(|c| fs::write(c.join("app/lib.sh"), "echo lib v2\n").unwrap()),
            vec![],
            vec![4, 5, 6, 7],
            "file app/lib.sh: content changed",
        ),
        (
            "mode of a copied file",
            Box::new(|c| {
                fs::set_permissions(c.join("app/main.sh"), fs::Permissions::from_mode(0o755))
                    .unwrap()
            }),
            vec![],
            vec![4, 5, 6, 7],
            "file app/main.sh: mode changed: 644 → 755",
        ),
        (
            "a build arg",
            Box::new(|_| {}),
            vec!["--build-arg", "MODE=prod"],
            vec![3, 4, 5, 6, 7],
            "build arg MODE changed: \"dev\" → \"prod\"",
        ),
        (
            "an instruction",
            Box::new(|c| {
                let df = DOCKERFILE.replace("ENV LEVEL=1", "ENV LEVEL=2");
                fs::write(c.join("Dockerfile"), df).unwrap();
            }),
            vec![],
            vec![6, 7],
            "instruction changed (was `ENV LEVEL=1`)",
        ),
    ];
    for (what, change, args, expected, explain) in rows {
        // Each row starts from the first build's inputs (its result is still cached).
        write_context(&ctx);
        fs::set_permissions(ctx.join("app/main.sh"), fs::Permissions::from_mode(0o644)).unwrap();
        build(&root, &ctx, &[]);
        change(&ctx);
        let out = build(&root, &ctx, &args);
        assert_eq!(missed(&out), expected, "after changing {what}:\n{out}");
        if !explain.is_empty() {
            assert!(
                out.contains(&format!("cache miss: {explain}")),
                "after changing {what}:\n{out}"
            );
        }
    }
}

#[test]
fn a_remote_cache_is_shared_by_two_stores() {
    if !can_build() || !have_tool("docker-registry") {
        return;
    }
    let registry = Registry::start(RegistryOptions::default()).expect("start docker-registry");
    let repo = format!("{}/buildcache", registry.host());
    let work = tempfile::tempdir().unwrap();
    let ctx = work.path().join("ctx");
    write_context(&ctx);
    let mut digests = Vec::new();
    for (i, name) in ["first", "second"].iter().enumerate() {
        let root = work.path().join(name);
        // The same base image in both stores (reproducible), so the keys match.
        let base = work.path().join(format!("base-{name}"));
        rbuild_testkit::busybox::write_context(&base).unwrap();
        ok(&rbuild(
            &root,
            &[
                "build",
                "--progress",
                "plain",
                "--source-date-epoch",
                "1700000000",
                "-t",
                "localhost/busybox:test",
                base.to_str().unwrap(),
            ],
        ));
        let flag = if i == 0 { "--cache-to" } else { "--cache-from" };
        let out = build(&root, &ctx, &[flag, &repo, "-t", "localhost/shared:1"]);
        if i == 1 {
            assert_eq!(
                missed(&out),
                Vec::<usize>::new(),
                "every step from the remote cache:\n{out}"
            );
        }
        digests.push(last_line(&out));
    }
    assert_eq!(
        digests[0], digests[1],
        "the second store rebuilt the same image from the cache"
    );
    let o = ok(&rbuild(
        &work.path().join("second"),
        &["run", "localhost/shared:1"],
    ));
    assert_eq!(o, "dev\n");
}

#[test]
fn prune_keeps_the_newest_cache_within_keep_storage_and_drops_the_rest() {
    if !can_build() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    build_base(&root, work.path());
    let ctx = work.path().join("ctx");
    write_context(&ctx);
    build(&root, &ctx, &["-t", "localhost/kept:1"]);
    ok(&rbuild(&root, &["rmi", "localhost/kept:1"]));
    // Enough room: the untagged build's cache survives and a rebuild runs nothing.
    ok(&rbuild(
        &root,
        &["prune", "--cache", "--keep-storage", "1GB"],
    ));
    let again = build(&root, &ctx, &[]);
    assert_eq!(missed(&again), Vec::<usize>::new(), "{again}");
    // No room: every cache entry whose content is not in a tagged image goes.
    ok(&rbuild(&root, &["prune", "--cache", "--keep-storage", "0"]));
    let cold = build(&root, &ctx, &[]);
    assert!(missed(&cold).contains(&3), "{cold}");
}

#[test]
fn a_rebuilt_copy_links_unchanged_files_and_gives_the_same_layer_as_a_fresh_copy() {
    if !can_build() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let epoch = ["--source-date-epoch", "1700000000"];
    let build_in = |root: &Path, ctx: &Path| -> serde_json::Value {
        build(root, ctx, &[epoch[0], epoch[1], "-t", "localhost/linked:1"]);
        serde_json::from_str(&ok(&rbuild(root, &["inspect", "localhost/linked:1"]))).unwrap()
    };
    let base = |name: &str| {
        let root = work.path().join(name);
        let b = work.path().join(format!("base-{name}"));
        rbuild_testkit::busybox::write_context(&b).unwrap();
        ok(&rbuild(
            &root,
            &[
                "build",
                "--progress",
                "plain",
                epoch[0],
                epoch[1],
                "-t",
                "localhost/busybox:test",
                b.to_str().unwrap(),
            ],
        ));
        root
    };
    // Store one: build, change one file, rebuild (unchanged files are linked from the last layer).
    let one = base("one");
    let ctx = work.path().join("ctx");
    write_context(&ctx);
    build_in(&one, &ctx);
    fs::write(ctx.join("app/lib.sh"), "echo lib v2\n").unwrap();
    let linked = build_in(&one, &ctx);
    // Store two: the changed context built from nothing.
    let two = base("two");
    let fresh = build_in(&two, &ctx);
    assert_eq!(
        linked["config"]["rootfs"]["diff_ids"], fresh["config"]["rootfs"]["diff_ids"],
        "linking unchanged files changes no byte of the layers"
    );
    // The unchanged file is one inode shared by the old and the new COPY layer directories.
    let mut links = 0;
    for e in fs::read_dir(one.join("layers")).unwrap().flatten() {
        let f = e.path().join("app/main.sh");
        if let Ok(md) = fs::metadata(&f) {
            use std::os::unix::fs::MetadataExt;
            links = links.max(md.nlink());
        }
    }
    assert_eq!(links, 2, "main.sh is linked, not copied");
}

#[test]
fn no_cache_filter_reruns_only_the_named_stage() {
    let Some((work, root)) = setup_with_base() else {
        return;
    };
    let ctx = context_with(
        work.path(),
        "filter",
        "FROM localhost/busybox:test AS deps\nRUN echo deps > /deps\n\
         FROM localhost/busybox:test\nCOPY --from=deps /deps /deps\nRUN echo app > /app\n",
    );
    build(&root, &ctx, &[]);
    let out = build(&root, &ctx, &["--no-cache-filter", "deps"]);
    assert!(
        out.contains("[deps 2/2] RUN echo deps"),
        "deps re-run:\n{out}"
    );
    assert!(out.contains("cache miss: --no-cache"), "{out}");
    // The final stage's RUN still hits: the deps layer came out the same.
    assert!(out.contains("CACHED [3/3] RUN echo app"), "{out}");
}

#[test]
fn a_hundred_thousand_file_context_rebuilds_from_cache_and_one_change_reruns_from_the_copy() {
    if !can_build() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    build_base(&root, work.path());
    let ctx = work.path().join("ctx");
    // 100,000 small files in 200 directories, and a Dockerfile that ships them all.
    for d in 0..200 {
        fs::create_dir_all(ctx.join(format!("d{d:03}"))).unwrap();
    }
    for i in 0..100_000 {
        fs::write(
            ctx.join(format!("d{:03}/f{i:06}", i % 200)),
            format!("file {i}\n"),
        )
        .unwrap();
    }
    fs::write(
        ctx.join("Dockerfile"),
        "FROM localhost/busybox:test
RUN echo before > /before
COPY . /src
RUN find /src -type f | wc -l > /count
ENV DONE=1
CMD [\"cat\", \"/count\"]
",
    )
    .unwrap();
    let many = [
        "--source-date-epoch",
        "1700000000",
        "-t",
        "localhost/many:1",
    ];
    let first = build(&root, &ctx, &many);
    assert_eq!(missed(&first), vec![2, 3, 4, 5, 6], "{first}");
    let count = ok(&rbuild(&root, &["run", "localhost/many:1"]));
    assert_eq!(
        count.trim(),
        "100001",
        "every file and the Dockerfile landed"
    );

    let again = build(&root, &ctx, &many);
    assert_eq!(
        missed(&again),
        Vec::<usize>::new(),
        "fully cached:\n{again}"
    );
    assert_eq!(last_line(&again), last_line(&first), "the same image");

    fs::write(ctx.join("d123/f050123"), "changed\n").unwrap();
    let changed = build(&root, &ctx, &many);
    assert_eq!(
        missed(&changed),
        vec![3, 4, 5, 6],
        "the COPY and what follows it run, nothing before:\n{changed}"
    );
    assert!(
        changed.contains("file d123/f050123: content changed"),
        "--explain names the one file:\n{changed}"
    );
    assert_ne!(last_line(&changed), last_line(&first));

    // Changing it back gives the first image again, from the cache.
    fs::write(ctx.join("d123/f050123"), "file 50123\n").unwrap();
    let back = build(&root, &ctx, &many);
    assert_eq!(missed(&back), Vec::<usize>::new(), "{back}");
    assert_eq!(last_line(&back), last_line(&first));
}
