//! `rbuild registry conformance` end to end: against the spec-strict fixture (exit 0, every
//! format), with the reference suite's environment variables, and against the real
//! docker-registry 2.8 with htpasswd credentials read from stdin (exit 1, exactly the
//! documented gaps of 2.8 failing, nothing left behind, the password never printed).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use rbuild_testkit::registry::{Registry, RegistryOptions};
use rbuild_testkit::strict_registry::StrictRegistry;

use crate::support::*;

/// Runs `rbuild registry conformance ARGS…` with only the given `OCI_*` variables set.
fn conformance(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(["registry", "conformance"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("OCI_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn rbuild");
    if let Some(mut pipe) = child.stdin.take()
        && let Some(input) = stdin
    {
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait for rbuild")
}

fn failed_checks(json: &serde_json::Value) -> BTreeSet<String> {
    json["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["checks"].as_array().unwrap().iter())
        .filter(|c| c["status"] == "failed")
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn conformance_command_passes_a_strict_registry_in_every_format() {
    let reg = StrictRegistry::start(&[]).unwrap();
    let target = format!("{}/conformance/cli", reg.host());
    let text = ok(&conformance(&[&target], &[], None));
    assert!(
        text.contains("pull: 16 passed, 0 failed, 0 skipped"),
        "{text}"
    );
    assert!(
        text.contains("total: 58 passed, 0 failed, 1 skipped"),
        "{text}"
    );

    let o = conformance(&["--format", "json", &target], &[], None);
    let json: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let names: Vec<&str> = json["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["pull", "push", "content-discovery", "content-management"]
    );
    let check = &json["workflows"][1]["checks"][0];
    for key in ["name", "status", "spec", "detail"] {
        assert!(check.get(key).is_some(), "{check}");
    }

    let xml = ok(&conformance(&["--format", "junit", &target], &[], None));
    assert!(xml.starts_with("<?xml"), "{xml}");
    assert_eq!(xml.matches("<testsuite ").count(), 4);
    assert!(xml.contains("failures=\"0\""));
    // Everything the three runs pushed is gone.
    assert_eq!(reg.manifest_count(), 0);
    assert_eq!(reg.blob_link_count(), 0);
}

#[test]
fn conformance_command_reads_the_reference_suite_environment() {
    let reg = StrictRegistry::start(&[]).unwrap();
    let root = format!("http://{}", reg.host());
    let reports = tempfile::tempdir().unwrap();
    let report_dir = reports.path().join("out");
    let o = conformance(
        &["--format", "json"],
        &[
            ("OCI_REPORT_DIR", report_dir.to_str().unwrap()),
            ("OCI_ROOT_URL", &root),
            ("OCI_NAMESPACE", "conformance/env"),
            ("OCI_TEST_PULL", "1"),
            ("OCI_TEST_CONTENT_MANAGEMENT", "true"),
            ("OCI_TEST_PUSH", "0"),
            ("OCI_CROSSMOUNT_NAMESPACE", "conformance/elsewhere"),
        ],
        None,
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let names: Vec<&str> = json["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pull", "content-management"]);
    assert_eq!(json["target"], format!("{}/conformance/env", reg.host()));
    // OCI_REPORT_DIR: where CI jobs of the reference suite collect junit.xml.
    let junit = std::fs::read_to_string(report_dir.join("junit.xml")).unwrap();
    assert_eq!(junit.matches("<testsuite ").count(), 2, "{junit}");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(saved["workflows"], json["workflows"]);
    // --workflows wins over the variables; the cross-mount namespace is used.
    let o = conformance(
        &["--workflows", "push", "--keep", "--format", "json"],
        &[
            ("OCI_ROOT_URL", &root),
            ("OCI_NAMESPACE", "conformance/env"),
            ("OCI_TEST_PULL", "1"),
            ("OCI_CROSSMOUNT_NAMESPACE", "conformance/elsewhere"),
        ],
        None,
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(json["workflows"].as_array().unwrap().len(), 1);
    assert!(
        reg.requests()
            .iter()
            .any(|r| r.starts_with("POST /v2/conformance/elsewhere/blobs/uploads/?mount=")),
        "{:?}",
        reg.requests()
    );
    // --keep left the push workflow's manifests.
    assert!(reg.manifest_count() > 0);

    // Bad input: a clear error and a non-zero exit.
    let o = conformance(&[], &[], None);
    assert!(stderr(&o).contains("OCI_ROOT_URL"), "{}", stderr(&o));
    assert!(!o.status.success());
    let o = conformance(&["--workflows", "pul", "127.0.0.1:1/x"], &[], None);
    assert!(
        stderr(&o).contains("unknown workflow `pul`"),
        "{}",
        stderr(&o)
    );
    assert!(!o.status.success());
}

#[test]
fn conformance_command_against_docker_registry_2_8_fails_only_its_known_gaps() {
    if !have_tool("docker-registry") || !have_tool("htpasswd") {
        return;
    }
    let password = "c0nformance-Secret";
    let reg = Registry::start(RegistryOptions::default().htpasswd("ci", password))
        .expect("start docker-registry");
    let target = format!("{}/conformance/cli", reg.host());
    let o = conformance(
        &["-u", "ci", "--password-stdin", "--format", "json", &target],
        &[],
        Some(password),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains(password) && !stderr(&o).contains(password));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let expected: BTreeSet<String> = [
        "GET manifest without Accept answers 200 with the manifest",
        "PATCH out-of-order chunk answers 416",
        "PATCH repeating the previous chunk answers 416",
        "PUT manifest with subject answers OCI-Subject",
        "tag list is in lexical order",
        "tag list with n returns the first n tags",
        "tag list with n and last returns the tags after last",
        "tag list pages walk every tag once, in order",
        "tag list with n=0 is empty, without Link",
        "GET referrers answers an image index of the referrers",
        "GET referrers with artifactType filters them",
        "GET referrers of an unreferenced digest answers an empty index",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(failed_checks(&json), expected, "{out}");
    assert_eq!(json["leftovers"].as_array().unwrap().len(), 0, "{out}");
    // A wrong password: the run does not start, and says why.
    let o = conformance(
        &[
            "-u",
            "ci",
            "--password-stdin",
            "--workflows",
            "pull",
            &target,
        ],
        &[],
        Some("wrong"),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unauthorized"), "{}", stderr(&o));
}
