//! The engine through its public API with a test executor: cache decisions (the invalidation
//! table), layers and configs, cancellation. No RUN step starts a process, so these tests need
//! no root, namespaces or overlayfs (COPY's owner is set to the ids running the test).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rbuild::executor::{FnExecutor, RunOutcome};
use rbuild::{BuildEvent, BuildOptions, Builder, CancelToken, Error, Store};

const EPOCH: i64 = 1_700_000_000;

/// The test executor: a RUN "writes" `/run-<n>` with its argv, env and cwd, so its layer depends
/// on exactly what the step would have run with.
fn recording() -> FnExecutor {
    FnExecutor::new(|step, upper| {
        let text = format!(
            "args={:?}\nenv={:?}\ncwd={}\nuser={:?}\nmounts={}\n",
            step.args,
            step.env,
            step.cwd,
            step.user,
            step.mounts.len()
        );
        let name = format!("run-{}", hex_of(&text));
        fs::write(upper.join(name), text)?;
        Ok(RunOutcome::exited(0))
    })
}

fn hex_of(s: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Which steps ran (were not cached), as `stage:index`, and the image digest.
#[derive(Default)]
struct Seen {
    missed: Mutex<Vec<String>>,
}

struct Fixture {
    _tmp: tempfile::TempDir,
    store: Store,
    ctx: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir(&ctx).unwrap();
    Fixture {
        _tmp: tmp,
        store,
        ctx,
    }
}

/// `COPY` lines and cache mounts in the table use the ids of the user running the test, so the
/// copy needs no privilege (a rootful build's default, 0:0, when run as root).
fn chown_me(df: &str) -> String {
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    df.replace("--chown=ME", &format!("--chown={uid}:{gid}"))
        .replace("uid=ME,gid=ME", &format!("uid={uid},gid={gid}"))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Builds and returns (missed steps as "index: text", digest).
fn build(f: &Fixture, exec: &FnExecutor, opts: BuildOptions) -> (Vec<String>, String) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let builder = Builder::new(f.store.clone())
        .executor(exec.clone())
        .progress(move |e: BuildEvent| {
            if let BuildEvent::StepStarted {
                index,
                text,
                cached: false,
                ..
            } = e
                && index > 1
            {
                s.missed.lock().unwrap().push(format!("{index}: {text}"));
            }
        });
    let out = rt().block_on(builder.build(opts)).unwrap();
    let missed = seen.missed.lock().unwrap().clone();
    (missed, out.digest.to_string())
}

fn opts(f: &Fixture) -> BuildOptions {
    BuildOptions::new(&f.ctx).source_date_epoch(EPOCH)
}

fn files(ctx: &Path, list: &[(&str, &str)]) {
    for (p, c) in list {
        let p = ctx.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, c).unwrap();
    }
}

type Change = fn(&Path) -> BTreeMap<&'static str, &'static str>;

struct Row {
    name: &'static str,
    dockerfile: &'static str,
    setup: fn(&Path),
    /// Changes the context and returns build args for the second build.
    change: Change,
    /// Step numbers expected to run again.
    expected: Vec<usize>,
}

fn edit(ctx: &Path, from: &str, to: &str) {
    let df = fs::read_to_string(ctx.join("Dockerfile")).unwrap();
    assert!(df.contains(from), "{from} not in the Dockerfile");
    fs::write(ctx.join("Dockerfile"), df.replace(from, to)).unwrap();
}

fn none(_: &Path) -> BTreeMap<&'static str, &'static str> {
    BTreeMap::new()
}

#[test]
fn every_input_a_step_reads_is_in_its_key_and_nothing_else() {
    let rows = vec![
        Row {
            name: "nothing-changed",
            dockerfile: "FROM scratch\nCOPY --chown=ME f /f\nRUN make\n",
            setup: |c| files(c, &[("f", "f")]),
            change: none,
            expected: vec![],
        },
        Row {
            name: "copied-file-content",
            dockerfile: "FROM scratch\nRUN first\nCOPY --chown=ME f /f\nRUN make\n",
            setup: |c| files(c, &[("f", "f")]),
            change: |c| {
                files(c, &[("f", "g")]);
                none(c)
            },
            expected: vec![3, 4],
        },
        Row {
            name: "file-not-copied",
            dockerfile: "FROM scratch\nCOPY --chown=ME f /f\nRUN make\n",
            setup: |c| files(c, &[("f", "f"), ("other", "1")]),
            change: |c| {
                files(c, &[("other", "2")]);
                none(c)
            },
            expected: vec![],
        },
        Row {
            name: "copied-file-mode",
            dockerfile: "FROM scratch\nCOPY --chown=ME f /f\nRUN make\n",
            setup: |c| files(c, &[("f", "f")]),
            change: |c| {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(c.join("f"), fs::Permissions::from_mode(0o755)).unwrap();
                none(c)
            },
            expected: vec![2, 3],
        },
        Row {
            name: "ignored-file",
            dockerfile: "FROM scratch\nCOPY --chown=ME . /c/\nRUN make\n",
            setup: |c| {
                files(
                    c,
                    &[("a", "a"), ("b.log", "1"), (".dockerignore", "*.log\n")],
                )
            },
            change: |c| {
                files(c, &[("b.log", "2")]);
                none(c)
            },
            expected: vec![],
        },
        Row {
            name: "dockerignore-itself",
            dockerfile: "FROM scratch\nCOPY --chown=ME . /c/\n",
            setup: |c| {
                files(
                    c,
                    &[("a", "a"), ("b.log", "1"), (".dockerignore", "*.log\n")],
                )
            },
            change: |c| {
                files(c, &[(".dockerignore", "a\n")]);
                none(c)
            },
            expected: vec![2],
        },
        Row {
            name: "arg-used-by-run",
            dockerfile: "FROM scratch\nCOPY --chown=ME f /f\nARG A=1\nRUN make\n",
            setup: |c| files(c, &[("f", "f")]),
            change: |_| BTreeMap::from([("A", "2")]),
            expected: vec![4],
        },
        Row {
            name: "arg-not-declared",
            dockerfile: "FROM scratch\nRUN make\n",
            setup: |_| {},
            change: |_| BTreeMap::from([("UNUSED", "2")]),
            expected: vec![],
        },
        Row {
            name: "arg-unused-by-copy",
            dockerfile: "FROM scratch\nARG A=1\nCOPY --chown=ME f /f\nRUN make\n",
            setup: |c| files(c, &[("f", "f")]),
            change: |_| BTreeMap::from([("A", "2")]),
            expected: vec![4],
        },
        Row {
            name: "arg-used-by-copy",
            dockerfile: "FROM scratch\nARG A=f\nCOPY --chown=ME $A /f\nRUN make\n",
            setup: |c| files(c, &[("f", "f"), ("g", "g")]),
            change: |_| BTreeMap::from([("A", "g")]),
            expected: vec![3, 4],
        },
        Row {
            name: "label-and-expose-are-config-only",
            dockerfile: "FROM scratch\nLABEL v=1\nRUN one\nEXPOSE 80\nRUN two\n",
            setup: |_| {},
            change: |c| {
                edit(c, "v=1", "v=2");
                edit(c, "EXPOSE 80", "EXPOSE 81");
                none(c)
            },
            expected: vec![2, 4],
        },
        Row {
            name: "env-before-run",
            dockerfile: "FROM scratch\nRUN one\nENV A=1\nRUN two\n",
            setup: |_| {},
            change: |c| {
                edit(c, "A=1", "A=2");
                none(c)
            },
            expected: vec![3, 4],
        },
        Row {
            name: "run-text",
            dockerfile: "FROM scratch\nRUN one\nRUN two\nRUN three\n",
            setup: |_| {},
            change: |c| {
                edit(c, "RUN two", "RUN 2");
                none(c)
            },
            expected: vec![3, 4],
        },
        Row {
            name: "heredoc-body",
            dockerfile: "FROM scratch\nCOPY --chown=ME <<EOF /h\none\nEOF\nRUN make\n",
            setup: |_| {},
            change: |c| {
                edit(c, "one", "two");
                none(c)
            },
            expected: vec![2, 3],
        },
        Row {
            name: "run-heredoc-body",
            dockerfile: "FROM scratch\nRUN <<EOF\necho one\nEOF\n",
            setup: |_| {},
            change: |c| {
                edit(c, "one", "two");
                none(c)
            },
            expected: vec![2],
        },
        Row {
            name: "bind-mount-source",
            dockerfile: "FROM scratch\nRUN --mount=type=bind,source=src,target=/s make\n",
            setup: |c| files(c, &[("src/a", "one"), ("src.txt", "x")]),
            change: |c| {
                files(c, &[("src/a", "two")]);
                none(c)
            },
            expected: vec![2],
        },
        Row {
            name: "bind-mount-sibling",
            dockerfile: "FROM scratch\nRUN --mount=type=bind,source=src,target=/s make\n",
            setup: |c| files(c, &[("src/a", "one"), ("src.txt", "x")]),
            change: |c| {
                files(c, &[("src.txt", "y")]);
                none(c)
            },
            expected: vec![],
        },
        Row {
            name: "cache-mount-id",
            dockerfile: "FROM scratch\nRUN --mount=type=cache,id=one,target=/c,uid=ME,gid=ME make\n",
            setup: |_| {},
            change: |c| {
                edit(c, "id=one", "id=two");
                none(c)
            },
            expected: vec![2],
        },
        Row {
            name: "network-none",
            dockerfile: "FROM scratch\nRUN make\n",
            setup: |_| {},
            change: |c| {
                edit(c, "RUN make", "RUN --network=none make");
                none(c)
            },
            expected: vec![2],
        },
        Row {
            name: "copy-from-stage-with-the-same-files",
            dockerfile: "FROM scratch AS s\nCOPY --chown=ME f /f\nRUN one\nFROM scratch\nCOPY --chown=ME --from=s /f /f\nRUN two\n",
            setup: |c| files(c, &[("f", "f")]),
            // A new RUN in stage s: it runs, but /f is the same, so the final stage hits.
            change: |c| {
                edit(c, "RUN one", "RUN uno");
                none(c)
            },
            expected: vec![3],
        },
    ];
    for row in &rows {
        let f = fixture();
        fs::write(f.ctx.join("Dockerfile"), chown_me(row.dockerfile)).unwrap();
        (row.setup)(&f.ctx);
        let exec = recording();
        build(&f, &exec, opts(&f));
        let args = (row.change)(&f.ctx);
        let mut second = opts(&f);
        for (k, v) in &args {
            second = second.build_arg(*k, *v);
        }
        let (missed, digest) = build(&f, &exec, second);
        let ran: Vec<usize> = missed
            .iter()
            .map(|m| m.split(':').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(ran, row.expected, "{}: ran {missed:?}", row.name);
        // The cached image is the image a clean build makes.
        let mut clean = opts(&f).no_cache(true);
        for (k, v) in &args {
            clean = clean.build_arg(*k, *v);
        }
        let (_, clean_digest) = build(&f, &exec, clean);
        assert_eq!(digest, clean_digest, "{}: cached image differs", row.name);
    }
}

#[test]
fn a_failing_step_is_an_error_at_its_line_and_leaves_no_tag() {
    let f = fixture();
    fs::write(
        f.ctx.join("Dockerfile"),
        "FROM scratch\nRUN ok\nRUN fails\n",
    )
    .unwrap();
    let exec = FnExecutor::new(|step, _| {
        Ok(if step.args.iter().any(|a| a.contains("fails")) {
            RunOutcome::exited(3).with_output(&b"boom\n"[..])
        } else {
            RunOutcome::exited(0)
        })
    });
    let builder = Builder::new(f.store.clone()).executor(exec.clone());
    let tag: rbuild::Reference = "localhost/t:1".parse().unwrap();
    let err = rt()
        .block_on(builder.build(opts(&f).tag(tag.clone())))
        .unwrap_err();
    match &err {
        Error::RunFailed {
            line,
            status,
            output,
            ..
        } => {
            assert_eq!((*line, *status), (3, 3));
            assert!(output.contains("boom"), "{output}");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(f.store.resolve(&tag).unwrap().is_none());
    assert_eq!(exec.runs(), 2);
}

#[test]
fn the_step_gets_the_config_it_would_run_with() {
    let f = fixture();
    fs::write(
        f.ctx.join("Dockerfile"),
        "FROM scratch\nENV A=1\nARG B=2\nWORKDIR /\nUSER 1234\nRUN [\"/bin/app\", \"x\"]\n",
    )
    .unwrap();
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let exec = FnExecutor::new(move |step, _| {
        *g.lock().unwrap() = Some(step.clone());
        Ok(RunOutcome::exited(0))
    });
    build(&f, &exec, opts(&f));
    let step = got.lock().unwrap().clone().unwrap();
    assert_eq!(step.args, ["/bin/app", "x"]);
    assert!(step.env.contains(&"A=1".to_owned()), "{:?}", step.env);
    assert!(step.env.contains(&"B=2".to_owned()), "{:?}", step.env);
    assert!(
        step.env.iter().any(|e| e.starts_with("PATH=")),
        "{:?}",
        step.env
    );
    assert_eq!(step.cwd, "/");
    assert_eq!(step.user.as_deref(), Some("1234"));
}

#[test]
fn a_cancelled_token_stops_the_build_between_steps() {
    let f = fixture();
    fs::write(
        f.ctx.join("Dockerfile"),
        "FROM scratch\nRUN one\nRUN two\nRUN three\n",
    )
    .unwrap();
    let token = CancelToken::new();
    let t = token.clone();
    // The first step cancels the build as it runs: nothing after it runs.
    let exec = FnExecutor::new(move |_, _| {
        t.cancel();
        Ok(RunOutcome::exited(0))
    });
    let builder = Builder::new(f.store.clone()).executor(exec.clone());
    let err = rt()
        .block_on(builder.build(opts(&f).cancel_token(token)))
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err:?}");
    assert_eq!(exec.runs(), 1);
    // The store is consistent: nothing half-written.
    let report = f
        .store
        .check(rbuild::store::CheckOptions::default())
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn dropping_the_build_future_cancels_the_running_step() {
    let f = fixture();
    fs::write(
        f.ctx.join("Dockerfile"),
        "FROM scratch\nRUN slow\nRUN after\n",
    )
    .unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let started_tx = Mutex::new(started_tx);
    let exec = FnExecutor::new(move |step, _| {
        if step.args.iter().any(|a| a.contains("slow")) {
            let _ = started_tx.lock().unwrap().send(());
            // A long step; the build is dropped while it runs.
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        Ok(RunOutcome::exited(0))
    });
    let builder = Builder::new(f.store.clone()).executor(exec.clone());
    let rt = rt();
    rt.block_on(async {
        let fut = builder.build(opts(&f));
        tokio::select! {
            _ = fut => panic!("the build finished before it was dropped"),
            _ = tokio::task::spawn_blocking(move || started_rx.recv()) => {}
        }
    });
    // The blocking work notices the cancellation after the slow step and runs nothing more.
    drop(rt);
    assert_eq!(exec.runs(), 1);
}

/// Whether RUN steps can run in the real sandbox here; prints why not, and fails instead under
/// CI (`RBUILD_REQUIRE_SANDBOX`).
fn can_sandbox() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let busybox = Path::new("/bin/busybox").is_file();
    if root && busybox {
        return true;
    }
    let why =
        format!("skipped: needs root ({root}) and /bin/busybox from busybox-static ({busybox})");
    assert!(
        std::env::var_os("RBUILD_REQUIRE_SANDBOX").is_none(),
        "{why}"
    );
    eprintln!("{why}");
    false
}

/// Pids of processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

#[test]
fn dropping_the_build_future_kills_the_running_step_in_the_sandbox() {
    if !can_sandbox() {
        return;
    }
    let f = fixture();
    fs::copy("/bin/busybox", f.ctx.join("busybox")).unwrap();
    // A step that would run for 16 minutes; its second process (the shell's child) must die too.
    let marker = format!("{}", 900_000 + std::process::id() % 99_999);
    fs::write(
        f.ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox sleep {marker}; echo done\"]\n"
        ),
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let tx = Mutex::new(Some(tx));
    let builder = Builder::new(f.store.clone()).progress(move |e: BuildEvent| {
        if let BuildEvent::StepStarted { index: 3, .. } = e
            && let Some(tx) = tx.lock().unwrap().take()
        {
            let _ = tx.send(());
        }
    });
    let rt = rt();
    let m = marker.clone();
    rt.block_on(async {
        let fut = builder.build(opts(&f));
        let started = tokio::task::spawn_blocking(move || {
            rx.recv().unwrap();
            // Wait until the step's sleep is running (generous: a loaded machine starts the
            // sandbox slowly; this is a bound, not a timing target).
            for _ in 0..1200 {
                if !processes_with(&format!("sleep\0{m}")).is_empty() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            panic!("the step's process never started");
        });
        tokio::select! {
            r = fut => panic!("the build ended before it was dropped: {r:?}"),
            r = started => r.unwrap(),
        }
    });
    // The future is dropped: soon no process of the step is left (a bound of 60 s, not a
    // timing target).
    let mut left = processes_with(&format!("sleep\0{marker}"));
    for _ in 0..600 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        left = processes_with(&format!("sleep\0{marker}"));
    }
    if !left.is_empty() {
        // Clean up before failing, so the runtime's blocking thread can end.
        for pid in &left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        panic!("step processes left after the build was dropped: {left:?}");
    }
    drop(rt);
    // Nothing half-written: the store checks clean, no staging directory is left.
    let report = f
        .store
        .check(rbuild::store::CheckOptions::default())
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
}
