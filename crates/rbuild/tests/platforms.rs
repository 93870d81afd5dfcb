//! Multi-platform builds through the public API with test executors: BuildKit's automatic
//! platform args, the index the build writes, a `FROM --platform=$BUILDPLATFORM` stage shared by
//! the targets, and the errors a build gives before any step runs. No process starts, so these
//! need no root.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::fs;
use std::sync::{Arc, Mutex};

use rbuild::executor::{Executor, ExecutorError, FnExecutor, RunOutcome, RunStep, SandboxExecutor};
use rbuild::oci::media_type;
use rbuild::{BuildOptions, Builder, CancelToken, Error, Platform, Store};

const EPOCH: i64 = 1_700_000_000;

fn p(s: &str) -> Platform {
    s.parse().unwrap()
}

fn two() -> Vec<Platform> {
    vec![p("linux/amd64"), p("linux/arm64")]
}

/// An executor that records each RUN's command and environment, and writes them into the
/// step's layer (so a layer depends on what the step ran with).
fn recording(log: Arc<Mutex<Vec<String>>>) -> FnExecutor {
    FnExecutor::new(move |step, upper| {
        let env: Vec<&String> = step
            .env
            .iter()
            .filter(|e| e.starts_with("BUILD") || e.starts_with("TARGET"))
            .collect();
        let line = format!("{} {env:?}", step.args.join(" "));
        log.lock().unwrap().push(line.clone());
        fs::write(upper.join("ran"), line)?;
        Ok(RunOutcome::exited(0))
    })
}

fn build(
    dockerfile: &str,
    platforms: Vec<Platform>,
) -> (
    tempfile::TempDir,
    Store,
    Result<rbuild::BuildOutput, Error>,
    Vec<String>,
) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("amd64.txt"), "for amd64").unwrap();
    fs::write(ctx.join("arm64.txt"), "for arm64").unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let builder = Builder::new(store.clone()).executor(recording(log.clone()));
    let opts = BuildOptions::new(&ctx)
        .dockerfile_text("Dockerfile", dockerfile)
        .tag("localhost/app:multi".parse().unwrap())
        .source_date_epoch(EPOCH)
        .platforms(platforms);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = rt.block_on(builder.build(opts));
    let runs = log.lock().unwrap().clone();
    (tmp, store, out, runs)
}

#[test]
fn targetarch_expands_per_platform_and_the_index_names_each() {
    let df = "FROM scratch\nARG TARGETARCH\nCOPY ${TARGETARCH}.txt /which\nRUN echo $TARGETARCH\n";
    let (_tmp, store, out, runs) = build(df, two());
    let out = out.unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for arch in ["amd64", "arm64"] {
        assert!(
            runs.iter()
                .any(|r| r.contains(&format!("TARGETARCH={arch}"))),
            "{runs:?}"
        );
    }
    // The tag names an index with one entry per platform, each carrying its platform.
    let desc = rbuild::image::resolve(&store, "localhost/app:multi").unwrap();
    assert_eq!(desc.media_type().to_string(), media_type::OCI_INDEX);
    assert_eq!(desc.digest().to_string(), out.digest.to_string());
    let entries = rbuild::image::index_entries(&store, &out.digest).unwrap();
    let names: Vec<String> = entries.iter().map(|(_, p)| p.to_string()).collect();
    assert_eq!(names, ["linux/amd64", "linux/arm64"]);
    for ((platform, digest), (d, _)) in out.platforms.iter().zip(&entries) {
        assert_eq!(d.digest().to_string(), digest.to_string());
        let img = rbuild::image::load(&store, digest).unwrap();
        assert_eq!(img.config.architecture, platform.architecture);
        assert_eq!(img.config.os, "linux");
        // COPY ${TARGETARCH}.txt took each platform's file.
        let layer = store.layer_dir(&img.layers[0].diff_id);
        assert_eq!(
            fs::read_to_string(layer.join("which")).unwrap(),
            format!("for {}", platform.architecture)
        );
    }
    // Picking a platform out of the index in the store.
    let arm = rbuild::image::resolve_for(&store, "localhost/app:multi", Some(&p("linux/arm64/v8")))
        .unwrap();
    assert_eq!(arm.digest().to_string(), out.platforms[1].1.to_string());
}

#[test]
fn the_same_inputs_give_the_same_index_digest() {
    let df = "FROM scratch\nARG TARGETPLATFORM\nRUN build for $TARGETPLATFORM\n";
    let (_a, _, first, _) = build(df, two());
    let (_b, _, second, _) = build(df, two());
    assert_eq!(first.unwrap().digest, second.unwrap().digest);
}

#[test]
fn automatic_args_are_defined_before_from_and_in_stages_that_declare_them() {
    let df = "ARG TARGETOS\nFROM scratch\nARG BUILDPLATFORM\nARG BUILDARCH\nARG TARGETPLATFORM\nARG TARGETVARIANT\nRUN show\n";
    let (_tmp, _, out, runs) = build(df, vec![p("linux/arm/v6")]);
    out.unwrap();
    let host = Platform::host();
    let run = &runs[0];
    assert!(run.contains(&format!("BUILDPLATFORM={host}")), "{run}");
    assert!(
        run.contains(&format!("BUILDARCH={}", host.architecture)),
        "{run}"
    );
    assert!(run.contains("TARGETPLATFORM=linux/arm/v6"), "{run}");
    assert!(run.contains("TARGETVARIANT=v6"), "{run}");
    // Not declared in the stage: not in its environment.
    assert!(!run.contains("TARGETOS="), "{run}");
}

#[test]
fn a_buildplatform_stage_runs_once_for_all_targets() {
    let df = "FROM --platform=$BUILDPLATFORM scratch AS tools\nRUN make tools\n\
              FROM scratch\nARG TARGETARCH\nCOPY --from=tools /ran /tools-ran\nRUN cross-build $TARGETARCH\n";
    let (_tmp, store, out, runs) = build(
        df,
        vec![p("linux/arm64"), p("linux/s390x"), p("linux/amd64")],
    );
    let out = out.unwrap();
    let tools = runs
        .iter()
        .filter(|r| r.starts_with("/bin/sh -c make tools"))
        .count();
    assert_eq!(tools, 1, "the native stage ran once: {runs:?}");
    assert_eq!(runs.len(), 4, "{runs:?}");
    // Every target got the natively built file.
    for (_, digest) in &out.platforms {
        let img = rbuild::image::load(&store, digest).unwrap();
        let copied = store.layer_dir(&img.layers[0].diff_id).join("tools-ran");
        assert!(
            fs::read_to_string(copied)
                .unwrap()
                .starts_with("/bin/sh -c make tools")
        );
    }
}

#[test]
fn a_stage_on_a_buildplatform_stage_keeps_its_platform() {
    let df = "FROM --platform=$BUILDPLATFORM scratch AS native\nFROM native AS still-native\nRUN uname\nFROM scratch\nCOPY --from=still-native /ran /ran\n";
    let (_tmp, _, out, runs) = build(df, two());
    out.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
}

/// An executor for which no foreign platform has an emulator, whatever the machine has.
#[derive(Debug)]
struct NoEmulation;

impl Executor for NoEmulation {
    fn check(&self) -> Result<(), ExecutorError> {
        Ok(())
    }

    fn missing_emulator(&self, platform: &Platform) -> Option<String> {
        (platform.architecture != Platform::host().architecture)
            .then(|| "no binfmt_misc entry `qemu-x` is registered".to_owned())
    }

    fn run(
        &self,
        _step: &RunStep,
        _output: &mut dyn FnMut(&[u8]),
        _cancel: &CancelToken,
    ) -> Result<RunOutcome, ExecutorError> {
        panic!("no step may run when an emulator is missing");
    }
}

#[test]
fn a_missing_emulator_is_an_error_before_any_step_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let foreign = if Platform::host().architecture == "arm64" {
        p("linux/amd64")
    } else {
        p("linux/arm64")
    };
    let opts = BuildOptions::new(tmp.path())
        .dockerfile_text("Dockerfile", "FROM scratch\nCOPY . /src\n\nRUN make\n")
        .tag("localhost/app:x".parse().unwrap())
        .platforms([Platform::host(), foreign.clone()]);
    let err = Builder::new(store.clone())
        .executor(NoEmulation)
        .build_blocking(&opts)
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("Dockerfile:4: RUN for "), "{msg}");
    assert!(msg.contains(&foreign.to_string()), "{msg}");
    assert!(msg.contains("qemu-user-static"), "{msg}");
    assert!(store.images().unwrap().is_empty(), "nothing tagged");
    // A build that runs nothing on the foreign platform needs no emulator.
    let opts = BuildOptions::new(tmp.path())
        .dockerfile_text("Dockerfile", "FROM scratch\nCOPY . /src\n")
        .platforms([foreign]);
    Builder::new(store)
        .executor(NoEmulation)
        .build_blocking(&opts)
        .unwrap();
    // The real executor's answer for the host is always "nothing missing".
    assert_eq!(SandboxExecutor.missing_emulator(&Platform::host()), None);
}

#[test]
fn a_base_image_without_the_platform_is_named_with_the_platforms_it_has() {
    let (tmp, store, out, _) = build("FROM scratch\nCOPY amd64.txt /x\n", two());
    out.unwrap();
    let opts = BuildOptions::new(tmp.path().join("ctx"))
        .dockerfile_text(
            "Dockerfile",
            "FROM scratch\nRUN true\nFROM localhost/app:multi\nCOPY arm64.txt /y\n",
        )
        .tag("localhost/next:1".parse().unwrap())
        .platforms([p("linux/amd64"), p("linux/ppc64le")]);
    let log = Arc::new(Mutex::new(Vec::new()));
    let err = Builder::new(store.clone())
        .executor(recording(log.clone()))
        .build_blocking(&opts)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Dockerfile:3: image localhost/app:multi has no manifest for linux/ppc64le (it has: linux/amd64, linux/arm64)"
    );
    assert!(log.lock().unwrap().is_empty(), "no step ran");
    assert!(
        rbuild::image::resolve(&store, "localhost/next:1").is_err(),
        "nothing tagged"
    );
    // A single-platform image used for another platform.
    let opts = BuildOptions::new(tmp.path().join("ctx"))
        .dockerfile_text("Dockerfile", "FROM scratch\nCOPY amd64.txt /x\n")
        .tag("localhost/one:1".parse().unwrap())
        .platform(p("linux/amd64"));
    Builder::new(store.clone()).build_blocking(&opts).unwrap();
    let opts = BuildOptions::new(tmp.path().join("ctx"))
        .dockerfile_text("Dockerfile", "FROM localhost/one:1\n")
        .platform(p("linux/arm64"));
    let err = Builder::new(store).build_blocking(&opts).unwrap_err();
    assert!(
        err.to_string()
            .contains("image localhost/one:1 is for linux/amd64, not linux/arm64"),
        "{err}"
    );
}

#[test]
fn a_bad_from_platform_names_the_line() {
    let (_tmp, _, out, _) = build(
        "FROM scratch\nRUN a\nFROM --platform=linux/sparc scratch\n",
        two(),
    );
    let msg = out.unwrap_err().to_string();
    assert!(
        msg.starts_with("Dockerfile:3: FROM --platform: unknown architecture `sparc`"),
        "{msg}"
    );
}
