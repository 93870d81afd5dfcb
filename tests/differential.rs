//! Differential suite: every case under `tests/differential/<case>/` is built by docker's classic
//! builder (a private `dockerd`, `DOCKER_BUILDKIT=0`) and by rbuild from the same base image
//! bytes; both images are exported, flattened (whiteouts applied) and compared path by path and
//! config field by config field. The set of differences must equal the case's `expect` file
//! exactly: documented classic-vs-BuildKit differences (rbuild follows BuildKit) and known rbuild
//! bugs. See `tests/differential/README.md`.
//!
//! `RBUILD_DIFFERENTIAL_CASES=a,b` runs only those cases; `RBUILD_DIFFERENTIAL_REPORT=FILE`
//! writes every difference found, in `expect` syntax, to FILE; `RBUILD_DIFFERENTIAL_KEEP=DIR`
//! keeps both exports of each case there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rbuild_testkit::docker::Dockerd;
use sha2::{Digest, Sha256};

use crate::support::*;

/// The corpus: one folder per case.
fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/differential")
}

/// The base image every case starts `FROM` (made by rbuild, loaded into docker).
const BASE: &str = "localhost/busybox:test";

/// Files of a case folder that are not part of its build context.
const NOT_CONTEXT: &[&str] = &["expect", "setup.sh", "Dockerfile.docker"];

// ---------------------------------------------------------------------------------------------
// Flattened images
// ---------------------------------------------------------------------------------------------

/// One path of a flattened root filesystem.
#[derive(Debug, Clone)]
struct Node {
    /// `file`, `dir`, `symlink`, `char`, `block`, `fifo`.
    kind: &'static str,
    /// Permission bits including setuid/setgid/sticky.
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    /// sha256 of the content (regular files).
    sha256: String,
    /// Short text content, shown in differences instead of the hash.
    preview: Option<String>,
    /// Symlink target, or `major,minor` of a device.
    link: String,
    /// Identity of the file's inode within the flattened image: hardlinks share it.
    inode: u64,
}

/// A flattened image: its root filesystem (paths without a leading `/`) and its config.
#[derive(Debug, Default)]
struct Flat {
    fs: BTreeMap<String, Node>,
    config: serde_json::Value,
}

fn clean_path(p: &Path) -> String {
    let s = p.to_string_lossy();
    let s = s.trim_start_matches("./").trim_start_matches('/');
    let s = s.trim_end_matches('/');
    if s == "." {
        String::new()
    } else {
        s.to_owned()
    }
}

fn decompress(bytes: Vec<u8>) -> Vec<u8> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .expect("gunzip a layer");
        out
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::decode_all(&bytes[..]).expect("unzstd a layer")
    } else {
        bytes
    }
}

/// Removes `path` and everything below it.
fn remove_tree(fs: &mut BTreeMap<String, Node>, path: &str) {
    fs.remove(path);
    let prefix = format!("{path}/");
    let below: Vec<String> = fs
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    for k in below {
        fs.remove(&k);
    }
}

/// Reads a docker-archive (`docker save` / `rbuild save --format docker-archive`) and applies
/// its layers in order. Whiteouts follow the OCI image spec (layer.md, "Whiteouts"): they apply
/// to lower layers only, whatever their place in the tar, so a layer's whiteouts are applied
/// before its entries.
fn flatten(archive: &Path) -> Flat {
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    let mut outer = tar::Archive::new(fs::File::open(archive).expect("open the archive"));
    for e in outer.entries().expect("read the archive") {
        let mut e = e.expect("archive entry");
        let name = clean_path(&e.path().unwrap());
        if e.header().entry_type().is_symlink() {
            // `docker save` links a layer that two images share instead of storing it twice.
            let target = e.link_name().unwrap().unwrap().into_owned();
            let joined = Path::new(&name)
                .parent()
                .unwrap_or(Path::new(""))
                .join(target);
            // Resolve `..` lexically: the names are all inside the archive.
            let mut parts: Vec<String> = Vec::new();
            for c in joined.components() {
                match c {
                    std::path::Component::ParentDir => {
                        parts.pop();
                    }
                    std::path::Component::Normal(n) => parts.push(n.to_string_lossy().into()),
                    _ => {}
                }
            }
            links.insert(name, parts.join("/"));
        } else if e.header().entry_type().is_file() {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            files.insert(name, v);
        }
    }
    let get = |name: &str| -> Vec<u8> {
        let mut name = clean_path(Path::new(name));
        for _ in 0..8 {
            if let Some(t) = links.get(&name) {
                name = clean_path(Path::new(t));
            }
        }
        files
            .get(&name)
            .unwrap_or_else(|| panic!("{} has no {name}", archive.display()))
            .clone()
    };
    let manifest: serde_json::Value = serde_json::from_slice(&get("manifest.json")).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&get(manifest[0]["Config"].as_str().unwrap())).unwrap();
    let mut flat = Flat {
        fs: BTreeMap::new(),
        config,
    };
    let mut next_inode = 0u64;
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        let bytes = decompress(get(layer.as_str().unwrap()));
        apply_layer(&mut flat.fs, &bytes, &mut next_inode);
    }
    flat
}

fn apply_layer(fs: &mut BTreeMap<String, Node>, bytes: &[u8], next_inode: &mut u64) {
    struct Entry {
        path: String,
        node: Option<Node>,
        hardlink_to: Option<String>,
    }
    let mut entries = Vec::new();
    let mut opaque = Vec::new();
    let mut whiteouts = Vec::new();
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries().expect("read a layer") {
        let mut e = e.expect("layer entry");
        let path = clean_path(&e.path().unwrap());
        if path.is_empty() {
            // The root directory itself: neither exporter writes an entry for it, and what a
            // tool might put there is not image content (the runtime owns the root's mode).
            continue;
        }
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (d.to_owned(), b.to_owned()),
            None => (String::new(), path.clone()),
        };
        if base == ".wh..wh..opq" {
            opaque.push(dir);
            continue;
        }
        if let Some(name) = base.strip_prefix(".wh.") {
            whiteouts.push(if dir.is_empty() {
                name.to_owned()
            } else {
                format!("{dir}/{name}")
            });
            continue;
        }
        let h = e.header();
        let et = h.entry_type();
        if et.is_hard_link() {
            let target = clean_path(&e.link_name().unwrap().unwrap());
            entries.push(Entry {
                path,
                node: None,
                hardlink_to: Some(target),
            });
            continue;
        }
        let kind = if et.is_dir() {
            "dir"
        } else if et.is_symlink() {
            "symlink"
        } else if et.is_character_special() {
            "char"
        } else if et.is_block_special() {
            "block"
        } else if et.is_fifo() {
            "fifo"
        } else {
            "file"
        };
        let link = match kind {
            "symlink" => e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default(),
            "char" | "block" => format!(
                "{},{}",
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0)
            ),
            _ => String::new(),
        };
        let mode = h.mode().unwrap() & 0o7777;
        let uid = h.uid().unwrap();
        let gid = h.gid().unwrap();
        let (size, sha256, preview) = if kind == "file" {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            let preview = (v.len() <= 120)
                .then(|| String::from_utf8(v.clone()).ok())
                .flatten()
                .filter(|s| !s.contains('\0'));
            (v.len() as u64, hex(&Sha256::digest(&v)), preview)
        } else {
            (0, String::new(), None)
        };
        *next_inode += 1;
        entries.push(Entry {
            path,
            node: Some(Node {
                kind,
                mode,
                uid,
                gid,
                size,
                sha256,
                preview,
                link,
                inode: *next_inode,
            }),
            hardlink_to: None,
        });
    }
    for dir in opaque {
        let prefix = format!("{dir}/");
        let below: Vec<String> = fs
            .keys()
            .filter(|k| dir.is_empty() || k.starts_with(&prefix))
            .cloned()
            .collect();
        for k in below {
            fs.remove(&k);
        }
    }
    for w in whiteouts {
        remove_tree(fs, &w);
    }
    for e in entries {
        let node = match (e.node, e.hardlink_to) {
            (Some(n), _) => n,
            (None, Some(t)) => fs
                .get(&t)
                .cloned()
                .unwrap_or_else(|| panic!("hardlink {} to missing {t}", e.path)),
            (None, None) => unreachable!(),
        };
        // A directory over a directory keeps its children (layer.md, "Changeset over
        // existing files"); anything else replaces the whole subtree.
        let keep_children = node.kind == "dir" && fs.get(&e.path).is_some_and(|o| o.kind == "dir");
        if !keep_children {
            remove_tree(fs, &e.path);
        }
        fs.insert(e.path, node);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

/// The config fields compared. The rest of docker's config (`Hostname`, `Image`, `AttachStdin`,
/// `OnBuild`, `ArgsEscaped`, the container config, history, `created`, `docker_version`) is
/// docker-only bookkeeping or build-time text that differs by design.
const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
    "Healthcheck",
    "Shell",
    "StopSignal",
];

/// `null`, a missing field and an empty map mean the same to a runtime; docker writes `null`
/// where an OCI writer omits the field.
fn normalise(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) if m.is_empty() => serde_json::Value::Null,
        serde_json::Value::String(s) if s.is_empty() => serde_json::Value::Null,
        other => other.clone(),
    }
}

fn describe(n: &Node) -> String {
    match n.kind {
        "symlink" => format!("symlink -> {}", n.link),
        k => k.to_owned(),
    }
}

fn content(n: &Node) -> String {
    match &n.preview {
        Some(p) => format!("{p:?}"),
        None => format!("sha256:{}… ({} bytes)", &n.sha256[..12], n.size),
    }
}

/// Paths sharing `path`'s inode in `fs`, other than `path`.
fn hardlinks(
    fs: &BTreeMap<String, Node>,
    path: &str,
    inodes: &HashMap<u64, Vec<String>>,
) -> String {
    let n = &fs[path];
    let others: Vec<String> = inodes
        .get(&n.inode)
        .into_iter()
        .flatten()
        .filter(|p| *p != path)
        .map(|p| format!("/{p}"))
        .collect();
    format!("[{}]", others.join(","))
}

fn inode_map(fs: &BTreeMap<String, Node>) -> HashMap<u64, Vec<String>> {
    let mut m: HashMap<u64, Vec<String>> = HashMap::new();
    for (p, n) in fs {
        if n.kind == "file" {
            m.entry(n.inode).or_default().push(p.clone());
        }
    }
    m
}

/// Every difference between docker's image and rbuild's, one line each. Below a path that one
/// side lacks or that has another type, nothing more is reported (it would only repeat it).
fn compare(docker: &Flat, rbuild: &Flat) -> Vec<String> {
    let mut out = Vec::new();
    let (di, ri) = (inode_map(&docker.fs), inode_map(&rbuild.fs));
    let paths: BTreeSet<&String> = docker.fs.keys().chain(rbuild.fs.keys()).collect();
    let mut pruned: Vec<String> = Vec::new();
    for p in paths {
        if pruned.iter().any(|q| p.starts_with(&format!("{q}/"))) {
            continue;
        }
        let shown = format!("/{p}");
        match (docker.fs.get(p), rbuild.fs.get(p)) {
            (Some(d), None) => {
                out.push(format!("fs {shown}: docker={} rbuild=missing", describe(d)));
                pruned.push(p.clone());
            }
            (None, Some(r)) => {
                out.push(format!("fs {shown}: docker=missing rbuild={}", describe(r)));
                pruned.push(p.clone());
            }
            (Some(d), Some(r)) => {
                if d.kind != r.kind {
                    out.push(format!(
                        "fs {shown}: type docker={} rbuild={}",
                        describe(d),
                        describe(r)
                    ));
                    pruned.push(p.clone());
                    continue;
                }
                if d.mode != r.mode {
                    out.push(format!(
                        "fs {shown}: mode docker={:04o} rbuild={:04o}",
                        d.mode, r.mode
                    ));
                }
                if (d.uid, d.gid) != (r.uid, r.gid) {
                    out.push(format!(
                        "fs {shown}: owner docker={}:{} rbuild={}:{}",
                        d.uid, d.gid, r.uid, r.gid
                    ));
                }
                if d.kind == "file" && (d.sha256 != r.sha256 || d.size != r.size) {
                    out.push(format!(
                        "fs {shown}: content docker={} rbuild={}",
                        content(d),
                        content(r)
                    ));
                }
                if d.link != r.link {
                    out.push(format!(
                        "fs {shown}: link docker={} rbuild={}",
                        d.link, r.link
                    ));
                }
                if d.kind == "file" {
                    let (dl, rl) = (hardlinks(&docker.fs, p, &di), hardlinks(&rbuild.fs, p, &ri));
                    if dl != rl {
                        out.push(format!("fs {shown}: hardlinks docker={dl} rbuild={rl}"));
                    }
                }
            }
            (None, None) => unreachable!(),
        }
    }
    for field in CONFIG_FIELDS {
        let d = normalise(&docker.config["config"][field]);
        let r = normalise(&rbuild.config["config"][field]);
        if d != r {
            out.push(format!("config {field}: docker={d} rbuild={r}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------------------------

/// What an `expect` line says a difference is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    /// A documented classic-builder-vs-BuildKit difference (rbuild follows BuildKit).
    Documented,
    /// A known rbuild bug: the item of the Dockerfile-semantics issue, or `new`.
    Bug(String),
}

/// Parses an `expect` file: `documented: DIFF` or `rbuild-bug ITEM: DIFF` per line; `#` lines
/// are the reasons.
fn read_expect(path: &Path) -> BTreeMap<String, Expected> {
    let mut m = BTreeMap::new();
    let Ok(text) = fs::read_to_string(path) else {
        return m;
    };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (head, diff) = line.split_once(": ").unwrap_or_else(|| {
            panic!(
                "{}:{}: expected `documented: …` or `rbuild-bug N: …`",
                path.display(),
                i + 1
            )
        });
        let kind = if head == "documented" {
            Expected::Documented
        } else if let Some(item) = head.strip_prefix("rbuild-bug ") {
            Expected::Bug(item.trim().to_owned())
        } else {
            panic!("{}:{}: unknown kind `{head}`", path.display(), i + 1)
        };
        m.insert(diff.to_owned(), kind);
    }
    m
}

// ---------------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------------

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Copies a case folder into a fresh context (symlinks stay symlinks), without the files that
/// describe the case, then runs its `setup.sh` there (links, modes and archives that git cannot
/// hold or that must be made at test time).
fn prepare_context(case: &Path, ctx: &Path) {
    sh(Command::new("cp").arg("-a").arg(case).arg(ctx));
    for f in NOT_CONTEXT {
        let _ = fs::remove_file(ctx.join(f));
    }
    let setup = case.join("setup.sh");
    if setup.exists() {
        sh(Command::new("sh").arg("-eu").arg(&setup).current_dir(ctx));
    }
}

struct CaseResult {
    name: String,
    diffs: Vec<String>,
    expect: BTreeMap<String, Expected>,
}

fn run_case(daemon: &Dockerd, root: &Path, work: &Path, case: &Path) -> CaseResult {
    let name = case.file_name().unwrap().to_string_lossy().into_owned();
    let dir = work.join(&name);
    fs::create_dir_all(&dir).unwrap();
    let ctx = dir.join("ctx");
    prepare_context(case, &ctx);
    let mut diffs = Vec::new();

    // The classic builder cannot parse some BuildKit-only flags (`--chmod`): such a case
    // carries the same steps written for the classic builder.
    let docker_file = if case.join("Dockerfile.docker").exists() {
        diffs.push("dockerfile: docker builds Dockerfile.docker".to_owned());
        case.join("Dockerfile.docker")
    } else {
        ctx.join("Dockerfile")
    };
    let iid = dir.join("docker.iid");
    let d = daemon
        .docker()
        .args(["build", "--network", "none", "--force-rm", "--iidfile"])
        .arg(&iid)
        .arg("-f")
        .arg(&docker_file)
        .arg(&ctx)
        .output()
        .expect("spawn docker build");
    let r = rbuild(
        root,
        &[
            "build",
            "--progress",
            "plain",
            // Docker's own image format: docker-only config fields (`Healthcheck`) are part of
            // what is compared; the OCI format drops HEALTHCHECK with a warning, as buildah does.
            "--format",
            "docker",
            "-t",
            &format!("localhost/differential-{name}:1"),
            ctx.to_str().unwrap(),
        ],
    );
    if !d.status.success() || !r.status.success() {
        let state = |o: &Output| if o.status.success() { "ok" } else { "failed" };
        diffs.push(format!("build: docker={} rbuild={}", state(&d), state(&r)));
        if !d.status.success() {
            eprintln!("  [{name}] docker build failed:\n{}", tail(&text(&d), 4));
        }
        if !r.status.success() {
            eprintln!("  [{name}] rbuild build failed:\n{}", tail(&text(&r), 4));
        }
        return CaseResult {
            name,
            diffs,
            expect: read_expect(&case.join("expect")),
        };
    }
    let image_id = fs::read_to_string(&iid).unwrap().trim().to_owned();
    let d_tar = dir.join("docker.tar");
    sh(daemon
        .docker()
        .args(["save", "-o"])
        .arg(&d_tar)
        .arg(&image_id));
    let digest = last_line(&stdout(&r));
    let r_tar = dir.join("rbuild.tar");
    ok(&support_rbuild_save(root, &digest, &r_tar));
    diffs.extend(compare(&flatten(&d_tar), &flatten(&r_tar)));
    if let Some(keep) = std::env::var_os("RBUILD_DIFFERENTIAL_KEEP") {
        let keep = Path::new(&keep);
        fs::create_dir_all(keep).unwrap();
        fs::copy(&d_tar, keep.join(format!("{name}.docker.tar"))).unwrap();
        fs::copy(&r_tar, keep.join(format!("{name}.rbuild.tar"))).unwrap();
    }
    CaseResult {
        name,
        diffs,
        expect: read_expect(&case.join("expect")),
    }
}

fn support_rbuild_save(root: &Path, reference: &str, out: &Path) -> Output {
    rbuild(
        root,
        &[
            "save",
            reference,
            "--format",
            "docker-archive",
            "-o",
            out.to_str().unwrap(),
        ],
    )
}

#[test]
fn rbuild_builds_the_same_images_as_docker() {
    if !can_build() {
        return;
    }
    if !rbuild_testkit::docker::available() {
        let why = "skipped: dockerd and docker are not installed (Debian package docker.io)";
        assert!(
            std::env::var_os("RBUILD_REQUIRE_SANDBOX").is_none(),
            "{why}"
        );
        eprintln!("{why}");
        return;
    }
    let daemon = Dockerd::start().expect("start a private dockerd");
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    build_base(&root, work.path());

    // The same base bytes for both builders: rbuild's base, saved and loaded into docker.
    let base_tar = work.path().join("base.tar");
    ok(&support_rbuild_save(&root, BASE, &base_tar));
    sh(daemon.docker().args(["load", "-i"]).arg(&base_tar));
    // The harness itself must not invent differences: docker's export of the loaded base
    // flattens to exactly what rbuild saved.
    let docker_base = work.path().join("base-docker.tar");
    sh(daemon
        .docker()
        .args(["save", "-o"])
        .arg(&docker_base)
        .arg(BASE));
    let base_diffs = compare(&flatten(&docker_base), &flatten(&base_tar));
    assert!(
        base_diffs.is_empty(),
        "the loaded base differs from rbuild's: {base_diffs:#?}"
    );
    assert!(
        flatten(&base_tar).fs.contains_key("bin/busybox"),
        "the flattener reads the base"
    );

    let only: Option<BTreeSet<String>> = std::env::var("RBUILD_DIFFERENTIAL_CASES")
        .ok()
        .map(|s| s.split(',').map(str::to_owned).collect());
    let mut cases: Vec<PathBuf> = fs::read_dir(corpus())
        .expect("read tests/differential")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .filter(|p| {
            only.as_ref()
                .is_none_or(|o| o.contains(p.file_name().unwrap().to_string_lossy().as_ref()))
        })
        .collect();
    cases.sort();
    if only.is_none() {
        assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    }

    let cases_dir = work.path().join("cases");
    let (mut same, mut documented, mut bugs, mut unexpected) = (0, 0, 0, 0);
    let mut failures = String::new();
    let mut report = String::new();
    for case in &cases {
        let res = run_case(&daemon, &root, &cases_dir, case);
        let actual: BTreeSet<&String> = res.diffs.iter().collect();
        let expected: BTreeSet<&String> = res.expect.keys().collect();
        let _ = writeln!(report, "## {}", res.name);
        for d in &res.diffs {
            let kind = match res.expect.get(d) {
                Some(Expected::Documented) => "documented".to_owned(),
                Some(Expected::Bug(i)) => format!("rbuild-bug {i}"),
                None => "UNEXPECTED".to_owned(),
            };
            let _ = writeln!(report, "{kind}: {d}");
        }
        if actual != expected {
            unexpected += 1;
            let _ = writeln!(failures, "case {}:", res.name);
            for d in actual.difference(&expected) {
                let _ = writeln!(failures, "  unexpected difference: {d}");
            }
            for d in expected.difference(&actual) {
                let why = match &res.expect[*d] {
                    Expected::Bug(i) => format!(
                        "rbuild-bug {i} is fixed? remove this line from tests/differential/{}/expect",
                        res.name
                    ),
                    Expected::Documented => format!(
                        "the documented difference is gone: remove this line from tests/differential/{}/expect",
                        res.name
                    ),
                };
                let _ = writeln!(failures, "  expected but not found ({why}): {d}");
            }
            eprintln!("differential: {} UNEXPECTED", res.name);
        } else if actual.is_empty() {
            same += 1;
            eprintln!("differential: {} same", res.name);
        } else if res.expect.values().any(|e| matches!(e, Expected::Bug(_))) {
            bugs += 1;
            eprintln!("differential: {} known rbuild bug", res.name);
        } else {
            documented += 1;
            eprintln!("differential: {} documented difference", res.name);
        }
    }
    if let Some(path) = std::env::var_os("RBUILD_DIFFERENTIAL_REPORT") {
        fs::write(path, &report).expect("write the report");
    }
    let summary = format!(
        "differential: {same} same, {documented} documented difference, {bugs} known rbuild bug, {unexpected} unexpected"
    );
    eprintln!("{summary}");
    assert!(
        unexpected == 0,
        "{summary}\n{failures}\nEach difference must be listed in the case's `expect` file (see tests/differential/README.md)."
    );
}

#[cfg(test)]
mod flattener {
    use super::*;

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header() -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = header();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
        let mut h = header();
        h.set_size(0);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Directory);
        b.append_data(&mut h, path, &[][..]).unwrap();
    }

    #[test]
    fn whiteouts_apply_to_lower_layers_only_and_hardlinks_share_an_inode() {
        let mut fs = BTreeMap::new();
        let mut ino = 0;
        let l1 = layer(|b| {
            dir(b, "d/");
            file(b, "d/a", b"a");
            file(b, "d/b", b"b");
            file(b, "x", b"x");
        });
        apply_layer(&mut fs, &l1, &mut ino);
        let l2 = layer(|b| {
            // The new entry comes before the opaque marker: it must survive it.
            file(b, "d/c", b"c");
            file(b, "d/.wh..wh..opq", b"");
            file(b, ".wh.x", b"");
            let mut h = header();
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, "d/c2", "d/c").unwrap();
        });
        apply_layer(&mut fs, &l2, &mut ino);
        let keys: Vec<&str> = fs.keys().map(String::as_str).collect();
        assert_eq!(keys, ["d", "d/c", "d/c2"]);
        assert_eq!(fs["d/c"].inode, fs["d/c2"].inode);
        let flat = Flat {
            fs,
            config: serde_json::json!({}),
        };
        let inodes = inode_map(&flat.fs);
        assert_eq!(hardlinks(&flat.fs, "d/c", &inodes), "[/d/c2]");
    }

    #[test]
    fn comparison_reports_each_aspect_and_prunes_below_a_missing_dir() {
        let node = |kind: &'static str, mode: u32, inode: u64| Node {
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: 1,
            sha256: "00".repeat(32),
            preview: Some("a".into()),
            link: String::new(),
            inode,
        };
        let mut d = Flat::default();
        let mut r = Flat::default();
        d.fs.insert("f".into(), node("file", 0o4755, 1));
        r.fs.insert("f".into(), node("file", 0o755, 1));
        d.fs.insert("gone".into(), node("dir", 0o755, 2));
        d.fs.insert("gone/x".into(), node("file", 0o644, 3));
        d.config = serde_json::json!({"config": {"ExposedPorts": {"80/tcp": {}}, "Labels": null}});
        r.config = serde_json::json!({"config": {"Labels": {}}});
        assert_eq!(
            compare(&d, &r),
            [
                "fs /f: mode docker=4755 rbuild=0755",
                "fs /gone: docker=dir rbuild=missing",
                r#"config ExposedPorts: docker={"80/tcp":{}} rbuild=null"#,
            ]
        );
    }
}
