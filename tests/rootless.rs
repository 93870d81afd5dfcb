//! Rootless builds: `rbuild` run by an ordinary user (test users made here, with and without
//! `/etc/subuid` ranges, through `runuser`), and by root inside `unshare --user
//! --map-root-user`. The images must be the rootful build's, bit for bit.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use crate::support::*;

/// A user with a subordinate range of 65,536 ids.
const RANGED: &str = "rbuild-rootless";
const RANGE_START: u32 = 400_000;
/// Root's range for `--userns=auto` when the machine has none.
const ROOT_RANGE_START: u32 = 1_000_000;
/// A user without ranges: a single-id namespace.
const SINGLE: &str = "rbuild-single";

/// Creates the test users once (useradd and /etc/subuid edits are not concurrent-safe).
fn ensure_users() -> bool {
    static DONE: Mutex<Option<bool>> = Mutex::new(None);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ok) = *done {
        return ok;
    }
    let ok = can_build()
        && have_tool("runuser")
        && have_tool("useradd")
        && have_tool("newuidmap")
        && have_tool("unshare")
        && make_users();
    *done = Some(ok);
    ok
}

fn make_users() -> bool {
    for user in [RANGED, SINGLE] {
        let exists = Command::new("id")
            .arg(user)
            .output()
            .is_ok_and(|o| o.status.success());
        if !exists {
            sh(Command::new("useradd").args(["-m", "-s", "/bin/sh", user]));
        }
    }
    // Exactly one range for RANGED, none for SINGLE (useradd may have added its own).
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = fs::read_to_string(file).unwrap_or_default();
        let mut kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                !l.starts_with(&format!("{RANGED}:")) && !l.starts_with(&format!("{SINGLE}:"))
            })
            .collect();
        let line = format!("{RANGED}:{RANGE_START}:65536");
        kept.push(&line);
        // Root's range, for `--userns=auto`, unless the machine has one.
        let root_line = format!("root:{ROOT_RANGE_START}:65536");
        if !kept.iter().any(|l| l.starts_with("root:")) {
            kept.push(&root_line);
        }
        fs::write(file, kept.join("\n") + "\n").unwrap();
    }
    true
}

fn uid_of(user: &str) -> u32 {
    sh(Command::new("id").args(["-u", user]))
        .trim()
        .parse()
        .unwrap()
}

/// A work directory owned by `user`, with the rbuild binary copied in (the build tree may not
/// be reachable by other users).
struct UserWork {
    user: &'static str,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl UserWork {
    fn new(user: &'static str) -> UserWork {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("rbuild");
        if fs::hard_link(bin(), &copy).is_err() {
            fs::copy(bin(), &copy).unwrap();
        }
        UserWork {
            user,
            dir,
            bin: copy,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Hands everything written so far to the user.
    fn give(&self) {
        sh(Command::new("chown")
            .args(["-R", self.user])
            .arg(self.path()));
    }

    /// `rbuild --root WORK/root ARGS` as the user, with HOME in the work directory.
    fn rbuild(&self, args: &[&str]) -> Output {
        self.give();
        Command::new("runuser")
            .args(["-u", self.user, "--", "env"])
            .arg(format!("HOME={}", self.path().display()))
            .arg(&self.bin)
            .arg("--root")
            .arg(self.path().join("root"))
            .args(args)
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("RBUILD_ROOT")
            .env_remove("XDG_DATA_HOME")
            .output()
            .unwrap()
    }
}

/// The multi-stage app: RUN chown to 1000, COPY --from keeping owners, COPY --chown, a USER
/// step, a deleted file (whiteout) and a replaced directory (opaque).
const APP: &str = "FROM localhost/busybox:test AS build
RUN mkdir -p /out && echo built > /out/artifact && chown 1000:1000 /out/artifact && chmod 640 /out/artifact
FROM localhost/busybox:test
COPY --from=build /out/artifact /srv/artifact
COPY --chown=1001:1002 data.txt /srv/data.txt
COPY data.txt /srv/root-owned.txt
RUN rm /etc/group && rm -rf /home && mkdir /home && echo fresh > /home/only
USER 1000
RUN echo hi > /tmp/by-1000
";

fn write_app(ctx: &Path) {
    fs::create_dir_all(ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), APP).unwrap();
    fs::write(ctx.join("data.txt"), "data\n").unwrap();
}

/// Builds the busybox base and the app with a fixed epoch; returns (base, app) digests.
fn build_both(
    run: &dyn Fn(&[&str]) -> Output,
    base_ctx: &Path,
    app_ctx: &Path,
) -> (String, String) {
    let build = |tag: &str, ctx: &Path| {
        last_line(&ok(&run(&[
            "build",
            "--progress",
            "plain",
            "--source-date-epoch",
            "0",
            "-t",
            tag,
            ctx.to_str().unwrap(),
        ])))
    };
    (
        build("localhost/busybox:test", base_ctx),
        build("localhost/app:test", app_ctx),
    )
}

/// The base and app digests of a rootful build of `W/base` and `W/app` into `W/rootful-root`.
fn rootful_digests(w: &Path) -> (String, String) {
    let root = w.join("rootful-root");
    build_both(&|a| rbuild(&root, a), &w.join("base"), &w.join("app"))
}

#[test]
fn a_rootless_build_gives_the_rootful_image_bit_for_bit() {
    if !ensure_users() || !have_tool("skopeo") || !have_tool("umoci") {
        return;
    }
    let user = UserWork::new(RANGED);
    let w = user.path();
    rbuild_testkit::busybox::write_context(&w.join("base")).unwrap();
    write_app(&w.join("app"));

    let info = ok(&user.rbuild(&["info"]));
    assert!(info.starts_with("mode: rootless\n"), "{info}");
    assert!(info.contains("65536 subordinate uids"), "{info}");

    let rootless = build_both(&|a| user.rbuild(a), &w.join("base"), &w.join("app"));
    let rootful = rootful_digests(w);
    assert_eq!(
        rootless, rootful,
        "rootless (left) and rootful (right) digests"
    );

    // On the host, the layer files belong to the user and their subordinate ids.
    let host_uid = uid_of(RANGED);
    let layers = w.join("root/layers");
    let mut owners = Vec::new();
    for layer in fs::read_dir(&layers).unwrap() {
        let path = layer.unwrap().path().join("out/artifact");
        if let Ok(meta) = fs::symlink_metadata(&path) {
            owners.push(meta.uid());
        }
    }
    assert_eq!(owners, [RANGE_START + 999], "host owner of uid 1000's file");
    assert_eq!(fs::metadata(w.join("root")).unwrap().uid(), host_uid);

    // An independent reader sees the image's ids.
    let layout = w.join("layout");
    sh(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:localhost/app:test", w.join("root").display()),
        &format!("oci:{}:app", layout.display()),
    ]));
    let bundle = w.join("bundle");
    sh(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:app", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let owner_mode = |p: &str| {
        let m = fs::symlink_metadata(rootfs.join(p)).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    assert_eq!(owner_mode("srv/artifact"), (1000, 1000, 0o640));
    assert_eq!(owner_mode("srv/data.txt").0, 1001);
    assert_eq!(owner_mode("srv/data.txt").1, 1002);
    assert_eq!(owner_mode("srv/root-owned.txt").0, 0);
    assert_eq!(owner_mode("tmp/by-1000").0, 1000);
    assert!(!rootfs.join("etc/group").exists(), "whiteout applied");
    assert!(
        !rootfs.join("home/app").exists(),
        "opaque /home hides the base's"
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("home/only")).unwrap(),
        "fresh\n"
    );
}

/// Steps (by number) that ran instead of coming from the cache.
fn ran(out: &str) -> Vec<usize> {
    out.lines()
        .filter(|l| l.starts_with('[') && !l.contains("] FROM "))
        .filter_map(|l| l[1..].split('/').next()?.parse().ok())
        .collect()
}

#[test]
fn rootless_rebuilds_hit_and_miss_the_cache_exactly_where_rootful_ones_do() {
    if !ensure_users() {
        return;
    }
    let user = UserWork::new(RANGED);
    let w = user.path();
    rbuild_testkit::busybox::write_context(&w.join("base")).unwrap();
    let ctx = w.join("ctx");
    fs::create_dir_all(ctx.join("app")).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM localhost/busybox:test\nARG MODE=dev\nRUN echo prepare > /prepared\n\
         COPY app/ /app/\nRUN echo \"$MODE\" > /mode\nCMD [\"cat\", \"/mode\"]\n",
    )
    .unwrap();
    fs::write(ctx.join("app/main.sh"), "echo main\n").unwrap();
    fs::write(ctx.join("notes.log"), "ignored\n").unwrap();
    fs::write(ctx.join(".dockerignore"), "*.log\n").unwrap();
    ok(&user.rbuild(&[
        "build",
        "-t",
        "localhost/busybox:test",
        w.join("base").to_str().unwrap(),
    ]));
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--progress", "plain"];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        ran(&ok(&user.rbuild(&args)))
    };
    assert_eq!(build(&[]), [2, 3, 4, 5, 6]);
    assert_eq!(build(&[]), Vec::<usize>::new(), "no change");
    fs::write(ctx.join("notes.log"), "still ignored\n").unwrap();
    assert_eq!(build(&[]), Vec::<usize>::new(), "an ignored file");
    fs::write(ctx.join("app/main.sh"), "echo changed\n").unwrap();
    assert_eq!(build(&[]), [4, 5, 6], "a copied file");
    assert_eq!(
        build(&["--build-arg", "MODE=prod"]),
        [3, 4, 5, 6],
        "an ARG RUN reads"
    );
    let run = ok(&user.rbuild(&[
        "run",
        "localhost/busybox:test",
        "--",
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map",
    ]));
    let mut lines = run.lines();
    assert_eq!(lines.next(), Some("0"), "{run}");
    let maps: Vec<Vec<u64>> = lines
        .map(|l| l.split_whitespace().map(|n| n.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        maps,
        [
            vec![0, u64::from(uid_of(RANGED)), 1],
            vec![1, u64::from(RANGE_START), 65536]
        ],
        "{run}"
    );
}

#[test]
fn a_pipeline_image_job_runs_rootless() {
    if !ensure_users() || !have_tool("git") {
        return;
    }
    let user = UserWork::new(RANGED);
    let w = user.path();
    rbuild_testkit::busybox::write_context(&w.join("base")).unwrap();
    ok(&user.rbuild(&[
        "build",
        "-t",
        "localhost/busybox:test",
        w.join("base").to_str().unwrap(),
    ]));
    let project = w.join("proj");
    fs::create_dir_all(&project).unwrap();
    fs::write(project.join("input.txt"), "from the checkout\n").unwrap();
    fs::write(
        project.join(".gitlab-ci.yml"),
        "image: localhost/busybox:test\ncompile:\n  script:\n    - cat input.txt\n    \
         - echo \"built by $(id -u)\" > output.txt\n",
    )
    .unwrap();
    user.give();
    let git = |args: &[&str]| {
        sh(Command::new("runuser")
            .args(["-u", RANGED, "--", "git", "-C"])
            .arg(&project)
            .args(["-c", "user.name=CI", "-c", "user.email=ci@example.com"])
            .args(args))
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "x"]);
    let out = ok(&user.rbuild(&["pipeline", "run", "--project", project.to_str().unwrap()]));
    assert!(out.contains("[compile] from the checkout"), "{out}");
    let written = project.join("output.txt");
    assert_eq!(fs::read_to_string(&written).unwrap(), "built by 0\n");
    // Root in the job is the user on the host.
    assert_eq!(fs::metadata(&written).unwrap().uid(), uid_of(RANGED));
}

/// `FROM scratch` with busybox and a RUN that stays with root's ids: buildable with one id.
fn write_single_id_context(ctx: &Path, dockerfile_tail: &str) {
    fs::create_dir_all(ctx).unwrap();
    fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    fs::write(ctx.join("f"), "f\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox echo ok > /ok\"]\n{dockerfile_tail}"
        ),
    )
    .unwrap();
}

#[test]
fn a_user_without_ranges_builds_with_one_id_and_is_told_what_fails() {
    if !ensure_users() {
        return;
    }
    let user = UserWork::new(SINGLE);
    let w = user.path();
    let info = ok(&user.rbuild(&["info"]));
    assert!(info.starts_with("mode: rootless (single id)\n"), "{info}");
    assert!(
        info.contains(&format!(
            "no range for {SINGLE}; add `{SINGLE}:100000:65536`"
        )),
        "{info}"
    );

    // Each case: the Dockerfile's tail, and what stderr must say (None: the build succeeds).
    let cases: [(&str, &str, &[&str]); 3] = [
        ("ok", "", &["warning: building rootless with a single id"]),
        (
            "copy",
            "COPY --chown=1000:1000 f /f\n",
            &[
                "Dockerfile:4",
                "owner 1000:1000",
                "not mapped in this user namespace",
            ],
        ),
        (
            "run",
            "RUN [\"/bin/busybox\", \"chown\", \"1000\", \"/ok\"]\n",
            &["Dockerfile:4: RUN", "maps a single id"],
        ),
    ];
    for (name, tail, says) in cases {
        write_single_id_context(&w.join(name), tail);
        let out = user.rbuild(&[
            "build",
            "--progress",
            "plain",
            w.join(name).to_str().unwrap(),
        ]);
        assert_eq!(
            out.status.success(),
            tail.is_empty(),
            "{name}: {}",
            stderr(&out)
        );
        for text in says {
            assert!(stderr(&out).contains(text), "{name}: {}", stderr(&out));
        }
    }
    // Nothing half-made: the store still holds only what succeeded.
    let check = ok(&user.rbuild(&["check"]));
    assert!(check.contains("store is clean"), "{check}");
}

#[test]
fn root_inside_unshare_map_root_user_builds_the_rootful_image() {
    if !ensure_users() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    write_single_id_context(
        &w.join("ctx"),
        "RUN [\"/bin/busybox\", \"rm\", \"/ok\"]\nCOPY f /f\n",
    );
    let unshared = |args: &[&str]| {
        Command::new("unshare")
            .args(["--user", "--map-root-user"])
            .arg(bin())
            .arg("--root")
            .arg(w.join("ns-root"))
            .args(args)
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap()
    };
    let info = ok(&unshared(&["info"]));
    assert!(info.starts_with("mode: user-namespaced root\n"), "{info}");
    let ctx = w.join("ctx");
    let args = [
        "build",
        "--progress",
        "plain",
        "--source-date-epoch",
        "0",
        ctx.to_str().unwrap(),
    ];
    let namespaced = last_line(&ok(&unshared(&args)));
    let rootful = last_line(&ok(&rbuild(&w.join("rootful-root"), &args)));
    assert_eq!(namespaced, rootful);

    // A store written rootful is refused from inside the namespace (its opaque markers are
    // trusted.* xattrs), with nothing changed.
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user"])
        .arg(bin())
        .arg("--root")
        .arg(w.join("rootful-root"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("a store is either rootful or rootless"),
        "{}",
        stderr(&out)
    );
}

/// Root's first `/etc/subuid` range start.
fn root_range_start() -> u64 {
    let text = fs::read_to_string("/etc/subuid").unwrap();
    let line = text.lines().find(|l| l.starts_with("root:")).unwrap();
    line.split(':').nth(1).unwrap().parse().unwrap()
}

#[test]
fn userns_auto_runs_steps_as_a_subordinate_root_with_the_same_image() {
    if !ensure_users() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    rbuild_testkit::busybox::write_context(&w.join("base")).unwrap();
    write_app(&w.join("app"));
    let auto_root = w.join("auto-root");
    let auto = build_both(
        &|a: &[&str]| {
            let mut args = a.to_vec();
            args.insert(1, "--userns=auto");
            rbuild(&auto_root, &args)
        },
        &w.join("base"),
        &w.join("app"),
    );
    let rootful = rootful_digests(w);
    assert_eq!(
        auto, rootful,
        "--userns=auto (left) and rootful (right) digests"
    );

    // The step's root is the start of root's subordinate range, not the host's root.
    let ctx = w.join("probe");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM localhost/busybox:test\nRUN cat /proc/self/uid_map\n",
    )
    .unwrap();
    let out = ok(&rbuild(
        &auto_root,
        &[
            "build",
            "--userns=auto",
            "--progress",
            "plain",
            ctx.to_str().unwrap(),
        ],
    ));
    let map = out
        .lines()
        .find_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            (f.len() == 3).then_some(f)
        })
        .unwrap_or_else(|| panic!("no uid_map line in:\n{out}"));
    assert_eq!(map, [0, root_range_start(), 65536], "{out}");

    // As an ordinary user the flag is refused with the reason.
    let user = UserWork::new(RANGED);
    let out = user.rbuild(&["build", "--userns=auto", ctx.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--userns=auto is for root on the host"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_docker_shim_builds_and_push_uses_the_users_credentials_rootless() {
    if !ensure_users() || !have_tool("docker-registry") || !have_tool("htpasswd") {
        return;
    }
    let registry = rbuild_testkit::registry::Registry::start(
        rbuild_testkit::registry::RegistryOptions::default().htpasswd("tester", "s3cret-pass"),
    )
    .expect("start the registry");
    let user = UserWork::new(RANGED);
    let w = user.path();
    rbuild_testkit::busybox::write_context(&w.join("base")).unwrap();
    let docker = w.join("docker");
    std::os::unix::fs::symlink(&user.bin, &docker).unwrap();
    user.give();
    let as_user = |program: &Path, args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", RANGED, "--", "env"])
            .arg(format!("HOME={}", w.display()))
            .arg(format!("RBUILD_ROOT={}", w.join("root").display()))
            .arg(program)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    };
    let built = ok(&as_user(
        &docker,
        &[
            "build",
            "-t",
            "localhost/busybox:test",
            w.join("base").to_str().unwrap(),
        ],
        None,
    ));
    assert!(built.contains("sha256:"), "{built}");
    let host = registry.host();
    ok(&as_user(
        &user.bin,
        &["login", &host, "-u", "tester", "--password-stdin"],
        Some("s3cret-pass\n"),
    ));
    // The credentials are the user's own file.
    let config = w.join(".docker/config.json");
    assert_eq!(fs::metadata(&config).unwrap().uid(), uid_of(RANGED));
    let image = format!("{host}/rootless/busybox:1");
    let pushed = as_user(&user.bin, &["push", "localhost/busybox:test", &image], None);
    ok(&pushed);
    assert!(!stdout(&pushed).contains("s3cret-pass") && !stderr(&pushed).contains("s3cret-pass"));
    let digest_in = |text: &str| {
        let at = text
            .find("sha256:")
            .unwrap_or_else(|| panic!("no digest in {text}"));
        text[at..at + 71].to_owned()
    };
    let pushed_digest = digest_in(&stdout(&pushed));

    // A rootful store pulls the same image.
    let fresh = tempfile::tempdir().unwrap();
    let home = fresh.path().join("home");
    fs::create_dir_all(home.join(".docker")).unwrap();
    fs::copy(&config, home.join(".docker/config.json")).unwrap();
    let pulled = Command::new(bin())
        .arg("--root")
        .arg(fresh.path().join("root"))
        .args(["pull", &image])
        .env("HOME", &home)
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap();
    let pulled = ok(&pulled);
    assert_eq!(digest_in(&pulled), pushed_digest, "{pulled}");
}
