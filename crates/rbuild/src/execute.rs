//! Executing a step that missed the cache: RUN in the sandbox (with its `--mount`s), COPY/ADD
//! into a fresh layer directory, WORKDIR's mkdir; then the layer is written and stored.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::executor::{BindMount, ExecutorError, Network, RunStep};
use rbuild_dockerfile::{Mount, MountType};
use sha2::Digest as _;

use crate::context::{Context, EntryKind, clean_rel};
use crate::copy;
use crate::error::{Error, Result};
use crate::events::BuildEvent;
use crate::image::{self, LayerRecord};
use crate::stage::Build;
use crate::step::{Action, Step};
use crate::view::LayerView;

impl Build<'_> {
    /// Runs one step; returns its layer, if it changed files.
    pub(crate) fn execute(
        &self,
        stage: usize,
        st: &Step,
        view: &LayerView,
    ) -> Result<Option<LayerRecord>> {
        let store = self.store;
        if matches!(st.action, Action::ConfigOnly) {
            return Ok(None);
        }
        let staging = store
            .staging()
            .map_err(|e| (self.step_err(st.line, "prepare a layer directory"))(e.into()))?;
        let upper = staging.upper();
        match &st.action {
            Action::ConfigOnly => return Ok(None),
            Action::Mkdir { path, user } => {
                // BuildKit: the directories WORKDIR creates belong to the step's user.
                let owner = match user {
                    Some(u) => view.resolve_chown(u).unwrap_or((0, 0)),
                    None => (0, 0),
                };
                let made = copy::mkdir(&upper, view, path, owner)
                    .map_err(|e| self.copy_err(st.line, e))?;
                if !made {
                    return Ok(None);
                }
            }
            Action::Copy(plan) => {
                // The last build of this step: its unchanged files are linked, not copied.
                let prev = self
                    .last_record
                    .stages
                    .get(&stage)
                    .and_then(|steps| steps.get(st.index - 2));
                let prev_dir = prev
                    .and_then(|p| self.store.cache_get(&p.key).ok().flatten())
                    .and_then(|e| {
                        serde_json::from_value::<crate::image::StepRecord>(e.payload).ok()
                    })
                    .and_then(|r| r.layer)
                    .map(|l| self.store.layer_dir(&l.diff_id))
                    .filter(|d| d.is_dir());
                let reuse = match (&prev_dir, prev) {
                    (Some(dir), Some(p)) => Some(copy::Reuse {
                        dir,
                        files: &p.files,
                    }),
                    _ => None,
                };
                copy::execute(plan, &upper, view, reuse.as_ref())
                    .map_err(|e| self.copy_err(st.line, e))?;
            }
            Action::Run {
                args,
                env,
                cwd,
                user,
                mounts,
                network_none,
                insecure,
                heredoc_file,
            } => {
                self.executor.check().map_err(Error::Executor)?;
                let scratch = staging.path().join("mounts");
                fs::create_dir_all(&scratch)
                    .map_err(|e| (self.step_err(st.line, "prepare the step's mounts"))(e.into()))?;
                let mut env = env.clone();
                // runc (under docker and BuildKit) sets HOME from the image's passwd entry of
                // the step's user when the config does not: `/` for a user it does not know.
                if !env.iter().any(|e| e.starts_with("HOME=")) {
                    env.push(format!("HOME={}", view.home_of(user.as_deref())));
                }
                // Predefined proxy args reach every RUN without an ARG, and stay out of the
                // cache key and the image (BuildKit).
                for name in PROXY_ARGS {
                    if let Some(v) = self.opts.build_args.get(*name)
                        && !env
                            .iter()
                            .any(|e| e.split_once('=').is_some_and(|(k, _)| k == *name))
                    {
                        env.push(format!("{name}={v}"));
                    }
                }
                let mut binds = Vec::new();
                for (i, m) in mounts.iter().enumerate() {
                    if let Some(b) =
                        self.mount(stage, st.line, m, &scratch.join(i.to_string()), &mut env)?
                    {
                        binds.push(b);
                    }
                }
                if let Some((name, script)) = heredoc_file {
                    // The sandbox's /dev is a fresh tmpfs with an empty /dev/pipes: the script's
                    // directory is bound over it, so the script runs as /dev/pipes/NAME (BuildKit).
                    let pipes = scratch.join("pipes");
                    let f = pipes.join(name);
                    fs::create_dir_all(&pipes)
                        .and_then(|()| fs::write(&f, script))
                        .and_then(|()| fs::set_permissions(&f, fs::Permissions::from_mode(0o755)))
                        .map_err(|e| {
                            (self.step_err(st.line, "write the heredoc script"))(e.into())
                        })?;
                    binds.push(BindMount {
                        source: pipes,
                        target: "/dev/pipes".to_owned(),
                        readonly: true,
                    });
                }
                let step = RunStep {
                    lower_dirs: view.dirs().to_vec(),
                    upper_dir: upper.clone(),
                    work_dir: staging.work(),
                    args: args.clone(),
                    env,
                    cwd: cwd.clone(),
                    user: user.clone(),
                    network: if *network_none {
                        Network::None
                    } else {
                        Network::Host
                    },
                    mounts: binds,
                    insecure: *insecure,
                    limits: self.opts.limits.clone(),
                    user_namespace: self.opts.user_namespace,
                };
                let progress = self.progress;
                let index = st.index;
                let outcome = self
                    .executor
                    .run(
                        &step,
                        &mut |bytes: &[u8]| {
                            progress.emit(BuildEvent::StepOutput {
                                stage,
                                index,
                                bytes: bytes.to_vec(),
                            });
                        },
                        &self.cancel,
                    )
                    .map_err(|e| match e {
                        ExecutorError::Cancelled => Error::Cancelled,
                        ExecutorError::Unavailable(_) => Error::Executor(e),
                        e => (self.step_err(st.line, "run the command"))(e.into()),
                    })?;
                // Secret files and mount scratch never reach the layer: they live beside it.
                let _ = fs::remove_dir_all(&scratch);
                if outcome.status != 0 {
                    let mut output = String::from_utf8_lossy(&outcome.output_tail).into_owned();
                    if outcome.oom_killed {
                        output.push_str(&format!(
                            "\nrbuild: the step was killed for running out of memory: it \
                             needed more than --memory {} bytes\n",
                            self.opts.limits.memory.unwrap_or_default()
                        ));
                    }
                    if single_id_namespace() && output.contains("Invalid argument") {
                        output.push_str(
                            "\nrbuild: this build runs in a user namespace that maps a single \
                             id (rootless without /etc/subuid and /etc/subgid ranges): giving a \
                             file to any other user or group fails with \"Invalid argument\"; \
                             see `rbuild info`\n",
                        );
                    }
                    return Err(Error::RunFailed {
                        file: self.file.clone(),
                        line: st.line,
                        command: st.display.trim_start_matches("RUN ").to_owned(),
                        status: outcome.status,
                        output,
                    });
                }
            }
        }
        let empty = rbuild_layer::is_empty_diff(&upper)
            .map_err(|e| (self.step_err(st.line, "read the step's changes"))(e.into()))?;
        if empty {
            return Ok(None);
        }
        let lopts = self.opts.layer_options();
        let writer = store
            .blob_writer()
            .map_err(|e| (self.step_err(st.line, "write the layer"))(e.into()))?;
        let (writer, desc) = rbuild_layer::write_layer(&upper, writer, &lopts)
            .map_err(|e| (self.step_err(st.line, "write the layer"))(e.into()))?;
        writer
            .commit(Some(&desc.digest))
            .map_err(|e| (self.step_err(st.line, "store the layer"))(e.into()))?;
        store
            .commit_layer_dir(staging, &desc.diff_id)
            .map_err(|e| (self.step_err(st.line, "store the layer directory"))(e.into()))?;
        Ok(Some(LayerRecord {
            digest: desc.digest,
            diff_id: desc.diff_id,
            size: desc.size,
            media_type: desc.media_type.to_owned(),
        }))
    }

    /// A COPY/ADD/WORKDIR failure: the user's mistake as a Dockerfile error at its line, an
    /// IO failure as a step error.
    fn copy_err(&self, line: usize, e: copy::CopyError) -> Error {
        match e {
            copy::CopyError::Input(m) => self.err(line, m),
            copy::CopyError::Io { what, source } => (self.step_err(line, what))(source.into()),
        }
    }

    /// Prepares one `RUN --mount`: the host side of a bind mount, or an environment variable
    /// for `type=secret,env=`. `scratch` is a per-mount directory beside the layer, removed after
    /// the run.
    fn mount(
        &self,
        stage: usize,
        line: usize,
        m: &Mount,
        scratch: &Path,
        env: &mut Vec<String>,
    ) -> Result<Option<BindMount>> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |e: std::io::Error| self.err(line, format!("RUN --mount={}: {what}: {e}", m.raw))
        };
        let target = m.target.clone();
        Ok(match m.kind {
            MountType::Cache => {
                let id = m.id.clone().or_else(|| target.clone()).unwrap_or_default();
                let dir = self
                    .store
                    .root()
                    .join("mounts/cache")
                    .join(&hex::encode(sha2::Sha256::digest(id.as_bytes()))[..32]);
                if !dir.exists() {
                    fs::create_dir_all(&dir).map_err(io("create the cache directory"))?;
                    let mode = m.mode.unwrap_or(0o755);
                    fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
                        .map_err(io("set its mode"))?;
                    std::os::unix::fs::chown(&dir, m.uid.or(Some(0)), m.gid.or(Some(0)))
                        .map_err(io("set its owner"))?;
                }
                Some(BindMount {
                    source: dir,
                    target: target
                        .ok_or_else(|| self.err(line, "RUN --mount=type=cache needs a target"))?,
                    readonly: false,
                })
            }
            MountType::Tmpfs => {
                fs::create_dir_all(scratch).map_err(io("create the tmpfs directory"))?;
                Some(BindMount {
                    source: scratch.to_owned(),
                    target: target
                        .ok_or_else(|| self.err(line, "RUN --mount=type=tmpfs needs a target"))?,
                    readonly: false,
                })
            }
            MountType::Secret => {
                let id =
                    m.id.clone()
                        .or_else(|| {
                            target
                                .as_deref()
                                .and_then(|t| t.rsplit('/').next())
                                .map(str::to_owned)
                        })
                        .ok_or_else(|| self.err(line, "RUN --mount=type=secret needs an id"))?;
                let Some(source) = self.opts.secrets.get(&id) else {
                    if m.required {
                        return Err(self.err(line, format!("secret {id} is required but was not given (pass --secret id={id},src=FILE)")));
                    }
                    return Ok(None);
                };
                // The value never goes into an error message.
                let value = source.read().map_err(|e| {
                    self.err(line, format!("secret {id} could not be read: {}", e.kind()))
                })?;
                if let Some(var) = &m.env {
                    env.push(format!("{var}={}", String::from_utf8_lossy(&value)));
                    if m.target.is_none() {
                        return Ok(None);
                    }
                }
                fs::create_dir_all(scratch).map_err(io("prepare the secret"))?;
                let f = scratch.join("secret");
                fs::write(&f, &value).map_err(io("write the secret"))?;
                fs::set_permissions(&f, fs::Permissions::from_mode(m.mode.unwrap_or(0o400)))
                    .map_err(io("set its mode"))?;
                std::os::unix::fs::chown(&f, m.uid.or(Some(0)), m.gid.or(Some(0)))
                    .map_err(io("set its owner"))?;
                Some(BindMount {
                    source: f,
                    target: target.unwrap_or_else(|| format!("/run/secrets/{id}")),
                    readonly: true,
                })
            }
            MountType::Bind => {
                let target =
                    target.ok_or_else(|| self.err(line, "RUN --mount=type=bind needs a target"))?;
                let rel = clean_rel(m.source.as_deref().unwrap_or(""))
                    .ok_or_else(|| self.err(line, "RUN --mount source climbs out of its root"))?;
                // The source is resolved inside its root and copied: the step sees a snapshot
                // it cannot write back through (a read-write bind writes into a throwaway copy,
                // as BuildKit discards them), and what `.dockerignore` excludes is not there.
                let host: PathBuf = match m.from.as_deref() {
                    None | Some("context") => {
                        self.with_context(|ctx, _| {
                            let Some(resolved) = ctx
                                .follow(&rel)
                                .or_else(|| rel.is_empty().then(String::new))
                            else {
                                return Err(self.err(
                                    line,
                                    format!(
                                        "RUN --mount source `{rel}` not found in the build context"
                                    ),
                                ));
                            };
                            if !resolved.is_empty() && !ctx.entries().contains_key(&resolved) {
                                return Err(self.err(
                                    line,
                                    format!(
                                        "RUN --mount source `{rel}` not found in the build context"
                                    ),
                                ));
                            }
                            snapshot_context(ctx, &resolved, scratch)
                                .map_err(io("copy the mount source"))
                        })?;
                        scratch.to_owned()
                    }
                    Some(from) => {
                        let src = self.source_image(from, stage, line)?;
                        let src_view = image::ensure_unpacked(self.store, &src.layers)?;
                        materialise(&src_view, &rel, scratch)
                            .map_err(io("prepare the mount source"))?;
                        scratch.to_owned()
                    }
                };
                Some(BindMount {
                    source: host,
                    target,
                    readonly: m.read_only,
                })
            }
            MountType::Ssh => {
                return Err(self.err(line, "RUN --mount=type=ssh is not supported yet"));
            }
        })
    }
}

/// Build args docker and BuildKit predefine: usable without an `ARG`, never in a key.
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Copies what the context has at `rel` (a file, or a directory and everything below it that
/// `.dockerignore` lets through) to the fresh directory `dest`, reading beneath the context
/// root; symlinks are copied as symlinks.
fn snapshot_context(ctx: &Context, rel: &str, dest: &Path) -> std::io::Result<()> {
    let entries = ctx.entries();
    if let Some(e) = entries.get(rel)
        && e.kind == EntryKind::File
    {
        return copy_entry(ctx, e, dest);
    }
    fs::create_dir_all(dest)?;
    for (_, sub, e) in ctx.below(rel) {
        write_below(dest, sub, &e.kind, |to| copy_entry(ctx, e, to))?;
    }
    Ok(())
}

fn copy_entry(ctx: &Context, e: &crate::context::Entry, to: &Path) -> std::io::Result<()> {
    let mut out = new_file(to)?;
    // The step's key holds this file's hash: deliver exactly those bytes (a file edited since
    // planning is an error, never a result cached under the old content's key).
    let got = crate::context::copy_hashed(ctx.open(e)?, &mut out)?;
    if let Some(want) = &e.sha256
        && *want != got
    {
        return Err(std::io::Error::other(format!(
            "{} changed during the build (its content is not what the cache key was computed from); build again",
            e.rel
        )));
    }
    out.set_permissions(fs::Permissions::from_mode(e.mode))
}

/// Creates a new file without following a symlink at its name.
fn new_file(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Creates `sub` below the fresh directory `dest`: a directory, a symlink (as a symlink), or a
/// file through `file`. Each parent must be a directory created here before (listings are
/// sorted, parents first), so no path below `dest` can pass through a symlink.
fn write_below(
    dest: &Path,
    sub: &str,
    kind: &EntryKind,
    file: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let to = dest.join(sub);
    if let Some(parent) = Path::new(sub).parent()
        && !parent.as_os_str().is_empty()
        && !fs::symlink_metadata(dest.join(parent)).is_ok_and(|m| m.is_dir())
    {
        return Ok(()); // below a link or a file: not part of the tree
    }
    match kind {
        EntryKind::Dir => match fs::create_dir(&to) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        },
        EntryKind::Symlink(t) => std::os::unix::fs::symlink(t, &to),
        EntryKind::File => file(&to),
    }
}

/// Copies what a merged layer view shows at `rel` (symlinks on the way followed inside the
/// image) into `dest`.
fn materialise(view: &LayerView, rel: &str, dest: &Path) -> std::io::Result<()> {
    let listing = view.list(rel)?;
    let given = clean_rel(rel).unwrap_or_default();
    if let Some(top) = listing.get(&given)
        && top.node.file_type() == rustix::fs::FileType::RegularFile
    {
        let mut out = new_file(dest)?;
        std::io::copy(&mut top.node.open()?, &mut out)?;
        return Ok(());
    }
    fs::create_dir_all(dest)?;
    for (path, e) in &listing {
        let sub = path
            .strip_prefix(&given)
            .unwrap_or(path)
            .trim_start_matches('/');
        if sub.is_empty() {
            continue;
        }
        let kind = match e.node.file_type() {
            rustix::fs::FileType::Directory => EntryKind::Dir,
            rustix::fs::FileType::Symlink => EntryKind::Symlink(PathBuf::from(e.node.read_link()?)),
            rustix::fs::FileType::RegularFile => EntryKind::File,
            _ => continue,
        };
        write_below(dest, sub, &kind, |to| {
            let mut out = new_file(to)?;
            std::io::copy(&mut e.node.open()?, &mut out)?;
            out.set_permissions(fs::Permissions::from_mode(e.node.stat.st_mode & 0o7777))
        })?;
    }
    Ok(())
}

/// Whether this process is root in a user namespace that maps only one uid (0): rootless
/// without subordinate ranges, or `unshare --map-root-user`.
fn single_id_namespace() -> bool {
    match rbuild_sandbox::userns::detect() {
        rbuild_sandbox::userns::Mode::NamespacedRoot { uids, .. } => {
            uids.iter().map(|r| u64::from(r.count)).sum::<u64>() <= 1
        }
        _ => false,
    }
}
