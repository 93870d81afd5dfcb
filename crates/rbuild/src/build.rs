//! The builder: Dockerfile → stages → planned steps → cached or executed → image in the store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rbuild_dockerfile::{Dockerfile, Instruction, InstructionKind};
use rbuild_layer::{Compression, LayerOptions};
use rbuild_oci::{Digest, Reference};
use rbuild_sandbox::{Network, RunSpec, Stdio};
use rbuild_store::{CacheEntry, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::{History, ImageConfig, Platform};
use crate::context::{Context, HashCache};
use crate::copy::{self, CopyRequest};
use crate::error::{BoxError, Error, Result};
use crate::events::{BuildEvent, NoProgress, Progress};
use crate::explain::{self, BuildRecord, StepInputs};
use crate::image::{self, LayerRecord};
use crate::options::{BuildOptions, DockerfileSource};
use crate::step::{self, Action, PlanState, Step};
use crate::view::LayerView;

/// The result of a build.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// Manifest digest of the image.
    pub digest: Digest,
    /// Tags given to it.
    pub tags: Vec<Reference>,
    /// Steps taken from the cache / steps in the built stages.
    pub cached_steps: usize,
    /// Steps in the built stages.
    pub total_steps: usize,
}

/// Builds images into a store. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use rbuild::{BuildOptions, Builder, BuildEvent, Store};
///
/// let store = Store::open("/var/lib/rbuild".as_ref())?;
/// let builder = Builder::new(store).progress(|e: BuildEvent| eprintln!("{e:?}"));
/// let out = builder
///     .build(BuildOptions::new("./app").tag("localhost/app:1".parse()?))
///     .await?;
/// println!("{}", out.digest);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Builder {
    store: Arc<Store>,
    progress: Arc<dyn Progress>,
}

/// What the step cache keeps for a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StepRecord {
    created: String,
    layer: Option<LayerRecord>,
}

/// A built (or resolved) stage.
#[derive(Debug, Clone)]
struct StageResult {
    config: ImageConfig,
    layers: Vec<LayerRecord>,
    key: String,
}

/// State of one build.
struct Run<'a> {
    b: &'a Builder,
    opts: &'a BuildOptions,
    file: String,
    df: Dockerfile,
    meta_args: BTreeMap<String, Option<String>>,
    platform: Platform,
    context: Option<Context>,
    hash_cache: HashCache,
    hash_cache_name: String,
    results: BTreeMap<usize, StageResult>,
    record: BuildRecord,
    last_record: BuildRecord,
    record_name: String,
    cached: usize,
    total: usize,
}

impl Builder {
    /// A builder over `store`, reporting nothing.
    pub fn new(store: Store) -> Self {
        Self {
            store: Arc::new(store),
            progress: Arc::new(NoProgress),
        }
    }

    /// Reports progress to `progress`.
    #[must_use]
    pub fn progress(mut self, progress: impl Progress + 'static) -> Self {
        self.progress = Arc::new(progress);
        self
    }

    /// The store images are built into.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Builds an image. Runs the blocking work (walking the context, RUN steps, compression) on
    /// tokio's blocking pool.
    ///
    /// # Errors
    ///
    /// [`Error::Dockerfile`] for an invalid Dockerfile (with file:line), [`Error::RunFailed`] for
    /// a RUN step that exits non-zero, others for store, sandbox and IO failures. On error no tag
    /// is created or moved; steps that completed stay cached.
    pub async fn build(&self, opts: BuildOptions) -> Result<BuildOutput> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.build_blocking(&opts))
            .await
            .map_err(Error::op("run the build"))?
    }

    /// Builds an image on the calling thread.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn build_blocking(&self, opts: &BuildOptions) -> Result<BuildOutput> {
        let _lock = self
            .store
            .lock_shared()
            .map_err(Error::op("lock the store"))?;
        let (file, text) = read_dockerfile(opts)?;
        let df = rbuild_dockerfile::parse(&text).map_err(|e| Error::Dockerfile {
            file: file.clone(),
            line: e.line(),
            column: e.column(),
            message: e.kind().to_string(),
        })?;
        for w in &df.warnings {
            self.progress.event(BuildEvent::Warning(format!(
                "{file}:{}: {}",
                w.line, w.message
            )));
        }
        if df.stages.is_empty() {
            return Err(Error::Dockerfile {
                file,
                line: 1,
                column: None,
                message: "the Dockerfile has no FROM instruction".to_owned(),
            });
        }
        let target = match &opts.target {
            None => df.stages.len() - 1,
            Some(t) => df
                .stages
                .iter()
                .position(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(t)))
                .ok_or_else(|| Error::Dockerfile {
                    file: file.clone(),
                    line: 1,
                    column: None,
                    message: format!("target stage `{t}` could not be found"),
                })?,
        };
        let file_name = file.clone();
        let mut run = Run {
            b: self,
            opts,
            file,
            df,
            meta_args: BTreeMap::new(),
            platform: Platform::host(),
            context: None,
            hash_cache: HashCache::default(),
            hash_cache_name: format!(
                "context-{}",
                &hex::encode(sha2::Sha256::digest(
                    opts.context.to_string_lossy().as_bytes()
                ))[..16]
            ),
            results: BTreeMap::new(),
            record: BuildRecord::default(),
            last_record: BuildRecord::default(),
            record_name: format!(
                "build-{}",
                &hex::encode(sha2::Sha256::digest(
                    format!("{}\0{file_name}\0{target}", opts.context.display()).as_bytes()
                ))[..16]
            ),
            cached: 0,
            total: 0,
        };
        run.resolve_meta_args()?;
        run.load_record();
        let result = run.stage(target)?;
        run.save_hash_cache();
        run.save_record();
        let mut config = result.config;
        if !opts.labels.is_empty() {
            let labels = config.config.labels.get_or_insert_with(BTreeMap::new);
            labels.extend(opts.labels.clone());
        }
        let desc = image::write(&self.store, &config, &result.layers, &BTreeMap::new())?;
        let digest: Digest =
            Digest::try_from(desc.digest()).map_err(Error::op("read the manifest digest"))?;
        for tag in &opts.tags {
            self.store
                .tag(tag, desc.clone())
                .map_err(Error::op(format!("tag the image as {tag}")))?;
        }
        self.progress.event(BuildEvent::ImageWritten {
            digest: digest.clone(),
            tags: opts.tags.iter().map(ToString::to_string).collect(),
        });
        Ok(BuildOutput {
            digest,
            tags: opts.tags.clone(),
            cached_steps: run.cached,
            total_steps: run.total,
        })
    }
}

use sha2::Digest as _;

fn read_dockerfile(opts: &BuildOptions) -> Result<(String, String)> {
    let path: PathBuf = match &opts.dockerfile {
        DockerfileSource::Text { name, text } => return Ok((name.clone(), text.clone())),
        DockerfileSource::Default => opts.context.join("Dockerfile"),
        DockerfileSource::Path(p) => p.clone(),
    };
    let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadDockerfile {
        path: path.clone(),
        source,
    })?;
    let name = match &opts.dockerfile {
        DockerfileSource::Default => "Dockerfile".to_owned(),
        _ => path.display().to_string(),
    };
    Ok((name, text))
}

fn now_rfc3339(epoch: Option<i64>) -> String {
    let t = match epoch {
        Some(e) => {
            time::OffsetDateTime::from_unix_timestamp(e).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        }
        None => time::OffsetDateTime::now_utc(),
    };
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Run<'_> {
    fn err(&self, line: usize, message: impl Into<String>) -> Error {
        Error::Dockerfile {
            file: self.file.clone(),
            line,
            column: None,
            message: message.into(),
        }
    }

    fn step_err(
        &self,
        line: usize,
        what: impl Into<String>,
    ) -> impl FnOnce(BoxError) -> Error + '_ {
        let what = what.into();
        move |source| Error::Step {
            file: self.file.clone(),
            line,
            what,
            source,
        }
    }

    /// Global ARGs (before the first FROM): `--build-arg` overrides the default.
    fn resolve_meta_args(&mut self) -> Result<()> {
        let lexer = step::lexer(self.df.directives.escape);
        let metas = self.df.meta_args.clone();
        for inst in &metas {
            let lookup = |n: &str| self.meta_args.get(n).cloned().flatten();
            let (expanded, _) = inst
                .expand(&lexer, &lookup)
                .map_err(|e| self.err(inst.span.start_line, e.kind().to_string()))?;
            if let InstructionKind::Arg(decls) = &expanded.kind {
                for d in decls {
                    let v = self
                        .opts
                        .build_args
                        .get(&d.name)
                        .cloned()
                        .or_else(|| d.default.clone());
                    self.meta_args.insert(d.name.clone(), v);
                }
            }
        }
        Ok(())
    }

    fn ensure_context(&mut self) -> Result<()> {
        if self.context.is_none() {
            let ctx =
                Context::walk(&self.opts.context).map_err(Error::op("read the build context"))?;
            if let Ok(Some(bytes)) = self.b.store.state_get(&self.hash_cache_name) {
                self.hash_cache = serde_json::from_slice(&bytes).unwrap_or_default();
            }
            self.context = Some(ctx);
        }
        Ok(())
    }

    fn load_record(&mut self) {
        if let Ok(Some(bytes)) = self.b.store.state_get(&self.record_name) {
            self.last_record = serde_json::from_slice(&bytes).unwrap_or_default();
        }
    }

    /// Keeps this build's step inputs for the next `--explain`; skipped when nothing changed.
    fn save_record(&self) {
        if self.record != self.last_record {
            if let Ok(bytes) = serde_json::to_vec(&self.record) {
                // Losing it only makes the next --explain less precise.
                let _ = self.b.store.state_put(&self.record_name, &bytes);
            }
        }
    }

    fn save_hash_cache(&mut self) {
        if let Some(ctx) = &self.context {
            self.hash_cache.retain_present(ctx);
            if let Ok(bytes) = serde_json::to_vec(&self.hash_cache) {
                // A lost hash cache only costs re-reading files next time.
                let _ = self.b.store.state_put(&self.hash_cache_name, &bytes);
            }
        }
    }

    /// Builds stage `idx` (and the stages it starts from).
    fn stage(&mut self, idx: usize) -> Result<StageResult> {
        if let Some(r) = self.results.get(&idx) {
            return Ok(r.clone());
        }
        let stage = self.df.stages[idx].clone();
        let lexer = step::lexer(self.df.directives.escape);
        let from_line = stage.from.span.start_line;
        let meta = self.meta_args.clone();
        let lookup = |n: &str| meta.get(n).cloned().flatten();
        let (from, _) = stage
            .from
            .expand(&lexer, &lookup)
            .map_err(|e| self.err(from_line, e.kind().to_string()))?;
        let InstructionKind::From(from) = &from.kind else {
            return Err(self.err(from_line, "a stage must start with FROM"));
        };
        let base_name = from.image.clone();
        // FROM <earlier stage> | scratch | image in the store.
        let earlier = self.df.stages[..idx].iter().position(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(&base_name))
        });
        let (base, from_text) = if let Some(e) = earlier {
            (self.stage(e)?, format!("FROM {base_name}"))
        } else if base_name == "scratch" {
            (
                StageResult {
                    config: ImageConfig::scratch(&self.platform),
                    layers: Vec::new(),
                    key: step::key_of(&json!(["scratch", self.platform.to_string()])),
                },
                "FROM scratch".to_owned(),
            )
        } else {
            let desc = image::resolve(&self.b.store, &base_name).map_err(|e| match e {
                Error::ImageNotFound { reference, .. } => self.err(
                    from_line,
                    format!(
                        "base image {reference} is not in the local store (build or pull it first)"
                    ),
                ),
                other => other,
            })?;
            let digest =
                Digest::try_from(desc.digest()).map_err(Error::op("read a manifest digest"))?;
            let img = image::load(&self.b.store, &digest)?;
            (
                StageResult {
                    config: img.config,
                    layers: img.layers,
                    key: digest.to_string(),
                },
                format!("FROM {}@{digest}", normalise(&base_name)),
            )
        };
        let total = stage.instructions.len() + 1;
        self.total += total;
        self.b.progress.event(BuildEvent::StepStarted {
            stage: idx,
            stage_name: stage.name.clone(),
            index: 1,
            total,
            text: from_text,
            cached: false,
        });
        let mut view = image::ensure_unpacked(&self.b.store, &base.layers)?;
        let steps = self.plan(&stage.instructions, &base, &view)?;

        // Execute.
        let mut config = base.config.clone();
        config.created = None;
        let mut layers = base.layers.clone();
        let mut key = base.key.clone();
        let mut last_created = None;
        for st in &steps {
            key = st.key.clone();
            let started = Instant::now();
            let hit = if self.opts.no_cache {
                None
            } else {
                self.cache_lookup(&st.key, &mut view)?
            };
            self.b.progress.event(BuildEvent::StepStarted {
                stage: idx,
                stage_name: stage.name.clone(),
                index: st.index,
                total,
                text: st.display.clone(),
                cached: hit.is_some(),
            });
            if hit.is_none() && self.opts.explain {
                let prev = self
                    .last_record
                    .stages
                    .get(&idx)
                    .and_then(|steps| steps.get(st.index - 2));
                let reason = if self.opts.no_cache {
                    "--no-cache".to_owned()
                } else {
                    explain::explain(prev, &st.inputs)
                };
                self.b.progress.event(BuildEvent::CacheMiss {
                    stage: idx,
                    index: st.index,
                    reason,
                });
            }
            self.record
                .stages
                .entry(idx)
                .or_default()
                .push(st.inputs.clone());
            let record = match hit {
                Some(r) => {
                    self.cached += 1;
                    r
                }
                None => {
                    let layer = self.execute(idx, st, &view)?;
                    let record = StepRecord {
                        created: now_rfc3339(self.opts.source_date_epoch),
                        layer,
                    };
                    let entry = CacheEntry {
                        blobs: record.layer.iter().map(|l| l.digest.clone()).collect(),
                        layer_dirs: record.layer.iter().map(|l| l.diff_id.clone()).collect(),
                        payload: serde_json::to_value(&record)
                            .map_err(Error::op("record a step in the cache"))?,
                    };
                    self.b
                        .store
                        .cache_put(&st.key, &entry)
                        .map_err(Error::op("record a step in the cache"))?;
                    record
                }
            };
            if let Some(l) = &record.layer {
                config.rootfs.diff_ids.push(l.diff_id.to_string());
                layers.push(l.clone());
                let mut dirs = vec![self.b.store.layer_dir(&l.diff_id)];
                dirs.extend(view.dirs().iter().cloned());
                view = LayerView::new(dirs);
            }
            config.history.push(History {
                created: Some(record.created.clone()),
                created_by: Some(st.created_by.clone()),
                comment: Some("buildkit.dockerfile.v0".to_owned()),
                empty_layer: record.layer.is_none(),
            });
            config.config = st.config_after.clone();
            last_created = Some(record.created);
            self.b.progress.event(BuildEvent::StepFinished {
                stage: idx,
                index: st.index,
                elapsed: started.elapsed(),
            });
        }
        config.created = Some(
            last_created
                .or_else(|| base.config.created.clone())
                .unwrap_or_else(|| now_rfc3339(self.opts.source_date_epoch)),
        );
        if self.opts.source_date_epoch.is_some() {
            config.created = Some(now_rfc3339(self.opts.source_date_epoch));
        }
        let result = StageResult {
            config,
            layers,
            key,
        };
        self.results.insert(idx, result.clone());
        Ok(result)
    }

    /// Plans every instruction of a stage: expansion, config effects, cache keys.
    fn plan(
        &mut self,
        instructions: &[Instruction],
        base: &StageResult,
        view: &LayerView,
    ) -> Result<Vec<Step>> {
        let lexer = step::lexer(self.df.directives.escape);
        let shell = base
            .config
            .config
            .extra
            .get("Shell")
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
            .unwrap_or_else(|| vec!["/bin/sh".to_owned(), "-c".to_owned()]);
        let mut st = PlanState {
            config: base.config.config.clone(),
            args: BTreeMap::new(),
            shell,
            cmd_set: false,
            key: base.key.clone(),
        };
        let platform = self.platform.to_string();
        let mut steps = Vec::with_capacity(instructions.len());
        for (i, inst) in instructions.iter().enumerate() {
            let line = inst.span.start_line;
            // The args a step can see are those declared before it: an ARG's own value is keyed
            // by the steps after it, so `--build-arg` invalidates from the first step that sees it.
            let visible_before = st.visible_args();
            let lookup_state = st.clone();
            let lookup = |n: &str| lookup_state.lookup(n);
            let (expanded, report) = inst
                .expand(&lexer, &lookup)
                .map_err(|e| self.err(line, e.kind().to_string()))?;
            for name in &report.unset {
                self.b.progress.event(BuildEvent::Warning(format!(
                    "{}:{line}: variable ${name} is not set (it expands to an empty string)",
                    self.file
                )));
            }
            let display = format!(
                "{} {}",
                step::keyword(&expanded.kind),
                display_args(&inst.original)
            );
            let mut sources_digest = String::new();
            let parent = st.key.clone();
            let (action, created_by) = match &expanded.kind {
                InstructionKind::Arg(decls) => {
                    let mut text = String::from("ARG");
                    for d in decls {
                        let value = self
                            .opts
                            .build_args
                            .get(&d.name)
                            .cloned()
                            .or_else(|| d.default.clone())
                            .or_else(|| self.meta_args.get(&d.name).cloned().flatten());
                        text.push(' ');
                        text.push_str(&d.name);
                        if let Some(def) = &d.default {
                            text.push('=');
                            text.push_str(def);
                        }
                        st.args.insert(d.name.clone(), value);
                    }
                    (Action::ConfigOnly, text)
                }
                InstructionKind::Copy(c) => {
                    if c.from.is_some() {
                        return Err(self.err(line, "COPY --from is not supported yet"));
                    }
                    self.plan_copy(
                        &mut st,
                        view,
                        line,
                        "COPY",
                        &c.sources,
                        &c.dest,
                        c.chown.as_deref(),
                        c.chmod.as_deref(),
                        &mut sources_digest,
                    )?
                }
                InstructionKind::Add(a) => {
                    if a.sources.iter().any(|s| s.contains("://")) {
                        return Err(self.err(line, "ADD from a URL is not supported yet"));
                    }
                    self.plan_copy(
                        &mut st,
                        view,
                        line,
                        "ADD",
                        &a.sources,
                        &a.dest,
                        a.chown.as_deref(),
                        a.chmod.as_deref(),
                        &mut sources_digest,
                    )?
                }
                InstructionKind::From(_) => {
                    return Err(self.err(line, "unexpected FROM inside a stage"));
                }
                _ => step::plan_simple(&mut st, &expanded).map_err(|m| self.err(line, m))?,
            };
            let key = step::key_of(&json!([
                parent,
                created_by,
                visible_before,
                sources_digest,
                platform
            ]));
            st.key = key.clone();
            let files = match &action {
                Action::Copy(plan) => self.files_of(plan),
                _ => BTreeMap::new(),
            };
            let inputs = StepInputs {
                key: key.clone(),
                parent,
                first: i == 0,
                created_by: created_by.clone(),
                args: visible_before,
                files,
            };
            steps.push(Step {
                index: i + 2,
                line,
                display,
                created_by,
                key,
                action,
                config_after: st.config.clone(),
                inputs,
            });
        }
        Ok(steps)
    }

    #[allow(clippy::too_many_arguments)] // one call per COPY/ADD variant; a struct would only rename them
    fn plan_copy(
        &mut self,
        st: &mut PlanState,
        view: &LayerView,
        line: usize,
        keyword: &str,
        sources: &[String],
        dest: &str,
        chown: Option<&str>,
        chmod: Option<&str>,
        sources_digest: &mut String,
    ) -> Result<(Action, String)> {
        self.ensure_context()?;
        let chown = match chown {
            Some(spec) => Some(
                view.resolve_user(spec)
                    .map_err(|m| self.err(line, format!("{keyword} --chown: {m}")))?,
            ),
            None => None,
        };
        let chmod = match chmod {
            Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| {
                self.err(
                    line,
                    format!("{keyword} --chmod={m}: expected an octal mode such as 0755"),
                )
            })?),
            None => None,
        };
        let workdir = st
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".to_owned());
        let ctx = self
            .context
            .as_mut()
            .unwrap_or_else(|| unreachable!("context loaded above"));
        let plan = copy::plan(
            ctx,
            &mut self.hash_cache,
            view,
            &CopyRequest {
                sources,
                dest,
                workdir: &workdir,
                chown,
                chmod,
                keyword,
            },
        )
        .map_err(|m| Error::Dockerfile {
            file: self.file.clone(),
            line,
            column: None,
            message: m,
        })?;
        sources_digest.clone_from(&plan.digest);
        let created_by = format!("{keyword} {} {} # buildkit", sources.join(" "), dest);
        Ok((Action::Copy(plan), created_by))
    }

    /// A COPY's sources in `--explain` form: context path → what lands where.
    fn files_of(&self, plan: &copy::CopyPlan) -> BTreeMap<String, String> {
        let root = self
            .context
            .as_ref()
            .map(|c| c.root().to_owned())
            .unwrap_or_default();
        plan.items
            .iter()
            .map(|it| {
                let rel = it
                    .src
                    .strip_prefix(&root)
                    .unwrap_or(&it.src)
                    .to_string_lossy()
                    .into_owned();
                let (kind, content) = match &it.kind {
                    crate::context::EntryKind::File => {
                        ("file", it.sha256.clone().unwrap_or_default())
                    }
                    crate::context::EntryKind::Dir => ("dir", String::new()),
                    crate::context::EntryKind::Symlink(t) => ("link", t.display().to_string()),
                };
                (
                    rel,
                    format!(
                        "{kind} {:o} {}:{} {content} → /{}",
                        it.mode, it.uid, it.gid, it.dest
                    ),
                )
            })
            .collect()
    }

    /// A cache hit whose layer is usable (blob present; unpacked dir present or re-made).
    fn cache_lookup(&self, key: &str, _view: &mut LayerView) -> Result<Option<StepRecord>> {
        let Some(entry) = self
            .b
            .store
            .cache_get(key)
            .map_err(Error::op("read the step cache"))?
        else {
            return Ok(None);
        };
        let Ok(record) = serde_json::from_value::<StepRecord>(entry.payload) else {
            return Ok(None);
        };
        if let Some(l) = &record.layer {
            if !self.b.store.has_blob(&l.digest) {
                return Ok(None);
            }
            if !self.b.store.has_layer_dir(&l.diff_id) {
                image::ensure_unpacked(&self.b.store, std::slice::from_ref(l))?;
            }
        }
        Ok(Some(record))
    }

    /// Runs one step; returns its layer, if it changed files.
    fn execute(&self, stage: usize, st: &Step, view: &LayerView) -> Result<Option<LayerRecord>> {
        let store = &self.b.store;
        let staging = store
            .staging()
            .map_err(|e| (self.step_err(st.line, "prepare a layer directory"))(e.into()))?;
        let upper = staging.upper();
        match &st.action {
            Action::ConfigOnly => return Ok(None),
            Action::Mkdir { path, user } => {
                let rel = path.trim_start_matches('/');
                if rel.is_empty() || view.find(rel).is_some() {
                    return Ok(None);
                }
                let owner = match user {
                    Some(u) => view.resolve_user(u).unwrap_or((0, 0)),
                    None => (0, 0),
                };
                let mut stamps = Vec::new();
                copy::ensure_parents(&upper, Path::new(rel), view, owner, &mut stamps)
                    .map_err(|e| (self.step_err(st.line, format!("create {path}")))(e.into()))?;
            }
            Action::Copy(plan) => {
                copy::execute(plan, &upper, view)
                    .map_err(|e| (self.step_err(st.line, "copy files into the layer"))(e.into()))?;
            }
            Action::Run {
                args,
                env,
                cwd,
                user,
            } => {
                rbuild_sandbox::check_support().map_err(Error::SandboxUnavailable)?;
                let spec = RunSpec {
                    lower_dirs: view.dirs().to_vec(),
                    upper_dir: upper.clone(),
                    work_dir: staging.work(),
                    args: args.clone(),
                    env: env.clone(),
                    cwd: cwd.clone(),
                    user: user.clone(),
                    network: Network::Host,
                    hostname: "rbuild".to_owned(),
                    stdio: Stdio::Capture,
                    ..RunSpec::default()
                };
                let progress = &self.b.progress;
                let index = st.index;
                let outcome = rbuild_sandbox::run(&spec, &mut |bytes: &[u8]| {
                    progress.event(BuildEvent::StepOutput {
                        stage,
                        index,
                        bytes: bytes.to_vec(),
                    });
                })
                .map_err(|e| (self.step_err(st.line, "run the command"))(e.into()))?;
                if outcome.status != 0 {
                    return Err(Error::RunFailed {
                        file: self.file.clone(),
                        line: st.line,
                        command: args.last().cloned().unwrap_or_default(),
                        status: outcome.status,
                        output: String::from_utf8_lossy(&outcome.output_tail).into_owned(),
                    });
                }
            }
        }
        let empty = rbuild_layer::is_empty_diff(&upper)
            .map_err(|e| (self.step_err(st.line, "read the step's changes"))(e.into()))?;
        if empty {
            return Ok(None);
        }
        let lopts = LayerOptions::default()
            .compression(Compression::Gzip)
            .source_date_epoch(self.opts.source_date_epoch);
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
}

fn normalise(name: &str) -> String {
    name.parse::<Reference>()
        .map_or_else(|_| name.to_owned(), |r| r.to_string())
}

/// The arguments part of an instruction's source text, on one line.
fn display_args(original: &str) -> String {
    let text = original.trim();
    let rest = text.split_once(char::is_whitespace).map_or("", |(_, r)| r);
    rest.split_whitespace().collect::<Vec<_>>().join(" ")
}
