//! One build in progress: stages (independent ones in parallel), their planning and the
//! cache decisions. Step execution is in `execute.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rbuild_dockerfile::{Dockerfile, Instruction, InstructionKind, Lexer};
use rbuild_oci::{Digest, Reference};
use rbuild_store::{CacheEntry, Store};

use sha2::Digest as _;

use crate::cancel::CancelToken;
use crate::config::{History, ImageConfig, Platform};
use crate::context::{Context, HashCache};
use crate::error::{BoxError, Error, Result};
use crate::events::BuildEvent;
use crate::executor::Executor;
use crate::explain::{self, BuildRecord};
use crate::image::{self, LayerRecord, StepRecord};
use crate::options::BuildOptions;
use crate::step::{self, Step};
use crate::view::LayerView;
use rbuild_oci::Events;

/// A built (or resolved) stage.
#[derive(Debug, Clone)]
pub(crate) struct StageResult {
    pub config: ImageConfig,
    pub layers: Vec<LayerRecord>,
    pub key: String,
}

/// The build context and its hash cache, loaded on first use.
#[derive(Default)]
pub(crate) struct ContextState {
    pub context: Option<Context>,
    pub hash_cache: HashCache,
    /// Content hashes of files in unpacked layer directories (`COPY --from` sources), keyed by
    /// their path in the store; layer directories never change, so entries stay valid.
    pub layer_hashes: Option<HashCache>,
}

/// One lock per step key, shared by the per-platform builds of one multi-platform build.
#[derive(Debug, Default)]
pub(crate) struct KeyLocks(Mutex<std::collections::HashMap<String, Arc<Mutex<()>>>>);

impl KeyLocks {
    /// The lock of `key` (created on first use).
    fn of(&self, key: &str) -> Arc<Mutex<()>> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(key.to_owned()).or_default().clone()
    }
}

/// BuildKit's automatic platform args (dockerfile2llb `defaultArgs`): defined before the first
/// FROM without an `ARG`, and in a stage once it declares them (`ARG TARGETARCH`).
pub(crate) fn platform_args(build: &Platform, target: &Platform) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (prefix, p) in [("BUILD", build), ("TARGET", target)] {
        out.push((format!("{prefix}PLATFORM"), p.to_string()));
        out.push((format!("{prefix}OS"), p.os.clone()));
        out.push((format!("{prefix}ARCH"), p.architecture.clone()));
        out.push((
            format!("{prefix}VARIANT"),
            p.variant.clone().unwrap_or_default(),
        ));
    }
    out
}

/// The state file of the layer-file hash cache.
const LAYER_HASHES: &str = "layer-hashes";

/// One build in progress. Shared by the threads that build independent stages.
pub(crate) struct Build<'a> {
    pub store: &'a Store,
    pub progress: &'a Events<BuildEvent>,
    /// Where missing `FROM` images are pulled from, if anywhere.
    pub registry: Option<&'a rbuild_registry::Client>,
    /// Runs RUN steps.
    pub executor: &'a dyn Executor,
    /// Fires when the build is cancelled.
    pub cancel: CancelToken,
    /// The runtime registry requests and downloads run on (none: they fail with a clear error).
    pub rt: Option<tokio::runtime::Handle>,
    pub opts: &'a BuildOptions,
    pub file: String,
    pub df: Dockerfile,
    pub meta_args: BTreeMap<String, Option<String>>,
    /// The platform this build is for (`TARGETPLATFORM`); a stage may run on another one
    /// (`FROM --platform=…`, see [`Build::stage_platform`]).
    pub platform: Platform,
    /// Steps being executed by any of the build's platforms, by key: a step that several
    /// targets share (a `FROM --platform=$BUILDPLATFORM` stage) runs once while the others
    /// wait, then take it from the cache.
    pub inflight: Arc<KeyLocks>,
    pub ctx: Mutex<ContextState>,
    pub hash_cache_name: String,
    pub record_name: String,
    pub record: Mutex<BuildRecord>,
    pub last_record: BuildRecord,
    slots: Vec<Mutex<Option<StageResult>>>,
    /// Steps found in `--cache-from` repositories, by key.
    remote_hits: Mutex<std::collections::HashMap<String, crate::remote_cache::RemoteHit>>,
    /// Every step of this build with its result, for `--cache-to`.
    pub exported: Mutex<Vec<(String, StepRecord)>>,
    pub cached: AtomicUsize,
    pub total: AtomicUsize,
}

pub(crate) fn now_rfc3339(epoch: Option<i64>) -> String {
    let t = match epoch {
        Some(e) => {
            time::OffsetDateTime::from_unix_timestamp(e).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        }
        None => time::OffsetDateTime::now_utc(),
    };
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn short_hash(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))[..16].to_owned()
}

impl<'a> Build<'a> {
    pub(crate) fn new(
        store: &'a Store,
        progress: &'a Events<BuildEvent>,
        opts: &'a BuildOptions,
        file: String,
        df: Dockerfile,
        target: usize,
    ) -> Self {
        let slots = (0..df.stages.len()).map(|_| Mutex::new(None)).collect();
        let ctx_id = opts
            .context
            .canonicalize()
            .unwrap_or_else(|_| opts.context.clone());
        let mut b = Self {
            store,
            progress,
            registry: None,
            executor: &crate::executor::SandboxExecutor,
            cancel: CancelToken::default(),
            rt: None,
            opts,
            hash_cache_name: format!("context-{}", short_hash(&ctx_id.to_string_lossy())),
            record_name: format!(
                "build-{}",
                short_hash(&format!("{}\0{file}\0{target}", ctx_id.display()))
            ),
            file,
            df,
            meta_args: BTreeMap::new(),
            platform: Platform::host(),
            inflight: Arc::default(),
            ctx: Mutex::new(ContextState::default()),
            record: Mutex::new(BuildRecord::default()),
            last_record: BuildRecord::default(),
            slots,
            remote_hits: Mutex::new(std::collections::HashMap::new()),
            exported: Mutex::new(Vec::new()),
            cached: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
        };
        if let Ok(Some(bytes)) = b.store.state_get(&b.record_name) {
            b.last_record = serde_json::from_slice(&bytes).unwrap_or_default();
        }
        b
    }

    pub(crate) fn err(&self, line: usize, message: impl Into<String>) -> Error {
        Error::Dockerfile {
            file: self.file.clone(),
            line,
            column: None,
            message: message.into(),
        }
    }

    pub(crate) fn step_err(
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

    pub(crate) fn lexer(&self) -> Lexer {
        step::lexer(self.df.directives.escape)
    }

    /// Builds for `target` (the default is the host): the stages' default platform, the
    /// automatic platform args, and the `--explain` record kept per platform.
    pub(crate) fn set_platform(&mut self, target: Platform) {
        if !target.same_as(&Platform::host()) {
            self.record_name = format!("{}-{}", self.record_name, short_hash(&target.to_string()));
        }
        self.platform = target;
    }

    /// Global ARGs (before the first FROM): `--build-arg` overrides the default. BuildKit's
    /// platform args are defined here without a declaration.
    pub(crate) fn resolve_meta_args(&mut self) -> Result<()> {
        for (k, v) in platform_args(&Platform::host(), &self.platform) {
            let v = self.opts.build_args.get(&k).cloned().unwrap_or(v);
            self.meta_args.insert(k, Some(v));
        }
        let lexer = self.lexer();
        let metas = self.df.meta_args.clone();
        for inst in &metas {
            let lookup = |n: &str| self.meta_args.get(n).cloned().flatten();
            let (expanded, _) = inst.expand(&lexer, &lookup).map_err(|e| {
                self.err(inst.span.start_line, crate::error::dockerfile_message(&e))
            })?;
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

    /// Keeps this build's step inputs for the next `--explain`, and the context hash cache.
    pub(crate) fn save_state(&self) {
        if let Ok(record) = self.record.lock()
            && *record != self.last_record
            && let Ok(bytes) = serde_json::to_vec(&*record)
        {
            // Losing it only makes the next --explain less precise.
            let _ = self.store.state_put(&self.record_name, &bytes);
        }
        if let Ok(mut st) = self.ctx.lock() {
            let st = &mut *st;
            if let Some(ctx) = &st.context {
                st.hash_cache.retain_present(ctx);
                if st.hash_cache.is_dirty() {
                    // A lost hash cache only costs re-reading files next time.
                    let _ = self
                        .store
                        .state_put(&self.hash_cache_name, &st.hash_cache.to_bytes());
                }
            }
            if let Some(h) = &mut st.layer_hashes
                && h.is_dirty()
            {
                // Forget the files of layer directories that are gone (pruned), one check
                // per directory.
                let layers = self.store.root().join("layers");
                let mut present: std::collections::HashMap<String, bool> = Default::default();
                h.retain_keys(|k| {
                    let Some(dir) = std::path::Path::new(k)
                        .strip_prefix(&layers)
                        .ok()
                        .and_then(|r| r.components().next())
                    else {
                        return false;
                    };
                    let dir = dir.as_os_str().to_string_lossy().into_owned();
                    *present
                        .entry(dir.clone())
                        .or_insert_with(|| layers.join(&dir).is_dir())
                });
                let _ = self.store.state_put(LAYER_HASHES, &h.to_bytes());
            }
        }
    }

    /// Runs `f` with the hash cache of layer files (loaded on first use).
    pub(crate) fn with_layer_hashes<T>(&self, f: impl FnOnce(&mut HashCache) -> T) -> Result<T> {
        let mut st = self.ctx.lock().map_err(|_| {
            Error::invalid("read the layer hash cache", "a parallel stage panicked")
        })?;
        let cache = st.layer_hashes.get_or_insert_with(|| {
            self.store
                .state_get(LAYER_HASHES)
                .ok()
                .flatten()
                .map(|b| HashCache::from_bytes(&b))
                .unwrap_or_default()
        });
        Ok(f(cache))
    }

    pub(crate) fn with_context<T>(
        &self,
        f: impl FnOnce(&mut Context, &mut HashCache) -> Result<T>,
    ) -> Result<T> {
        let mut st = self
            .ctx
            .lock()
            .map_err(|_| Error::invalid("read the build context", "a parallel stage panicked"))?;
        let st = &mut *st;
        if st.context.is_none() {
            let ctx =
                Context::walk(&self.opts.context).map_err(Error::op("read the build context"))?;
            if let Ok(Some(bytes)) = self.store.state_get(&self.hash_cache_name) {
                st.hash_cache = HashCache::from_bytes(&bytes);
            }
            st.context = Some(ctx);
        }
        let ctx = st
            .context
            .as_mut()
            .unwrap_or_else(|| unreachable!("loaded above"));
        f(ctx, &mut st.hash_cache)
    }

    /// The index of the stage `name` refers to (by name, case-insensitive, or by number), among
    /// the stages before `before`.
    pub(crate) fn stage_index(&self, name: &str, before: usize) -> Option<usize> {
        let stages = &self.df.stages[..before];
        stages
            .iter()
            .position(|s| {
                s.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .or_else(|| name.parse::<usize>().ok().filter(|&i| i < before))
    }

    /// Stage `idx`'s FROM with the global args expanded.
    fn expanded_from(&self, idx: usize) -> Result<rbuild_dockerfile::From> {
        let stage = &self.df.stages[idx];
        let lookup = |n: &str| self.meta_args.get(n).cloned().flatten();
        let (from, _) = stage.from.expand(&self.lexer(), &lookup).map_err(|e| {
            self.err(
                stage.from.span.start_line,
                crate::error::dockerfile_message(&e),
            )
        })?;
        match from.kind {
            InstructionKind::From(f) => Ok(f),
            _ => Err(self.err(stage.from.span.start_line, "a stage must start with FROM")),
        }
    }

    fn base_name_of(&self, idx: usize) -> Result<String> {
        Ok(self.expanded_from(idx)?.image)
    }

    /// The platform stage `idx` runs on: its `FROM --platform`, else the platform of the stage
    /// it builds on, else the build's target (BuildKit).
    pub(crate) fn stage_platform(&self, idx: usize) -> Result<Platform> {
        let from = self.expanded_from(idx)?;
        if let Some(p) = from.platform.as_deref().filter(|p| !p.is_empty()) {
            let line = self.df.stages[idx].from.span.start_line;
            let p: Platform = p
                .parse()
                .map_err(|e| self.err(line, format!("FROM --platform: {e}")))?;
            if p.os != "linux" {
                return Err(self.err(
                    line,
                    format!("FROM --platform={p}: only linux images can be built"),
                ));
            }
            return Ok(p);
        }
        match self.stage_index(&from.image, idx) {
            Some(base) => self.stage_platform(base),
            None => Ok(self.platform.clone()),
        }
    }

    /// The stages the target stage needs, itself included (FROM, `COPY --from`, mounts).
    pub(crate) fn reachable(&self, target: usize) -> Vec<usize> {
        let mut seen = vec![target];
        let mut i = 0;
        while i < seen.len() {
            for d in self.deps(seen[i]) {
                if !seen.contains(&d) {
                    seen.push(d);
                }
            }
            i += 1;
        }
        seen
    }

    /// Checks, before any step runs, that every foreign platform a RUN step of the target's
    /// stages will run on has an emulator, and that the base images have a manifest for
    /// their stage's platform (pulling them when they are not in the store).
    pub(crate) fn preflight(&self, target: usize) -> Result<()> {
        for idx in self.reachable(target) {
            let platform = self.stage_platform(idx)?;
            let stage = &self.df.stages[idx];
            if let Some(run) = stage
                .instructions
                .iter()
                .find(|i| matches!(i.kind, InstructionKind::Run(_)))
                && let Some(reason) = self.executor.missing_emulator(&platform)
            {
                return Err(Error::NoEmulator {
                    file: self.file.clone(),
                    line: run.span.start_line,
                    platform: platform.to_string(),
                    qemu: crate::emulation::qemu_name(&platform),
                    reason,
                });
            }
            let base = self.base_name_of(idx)?;
            if base != "scratch" && self.stage_index(&base, idx).is_none() {
                self.resolve_image(&base, stage.from.span.start_line, &platform)?;
            }
        }
        Ok(())
    }

    /// Stages that stage `idx` needs first: its FROM, `COPY --from`, `RUN --mount from=`.
    pub(crate) fn deps(&self, idx: usize) -> Vec<usize> {
        let mut deps = Vec::new();
        if let Ok(name) = self.base_name_of(idx)
            && let Some(i) = self.stage_index(&name, idx)
        {
            deps.push(i);
        }
        for inst in &self.df.stages[idx].instructions {
            let froms: Vec<&str> = match &inst.kind {
                InstructionKind::Copy(c) => c.from.as_deref().into_iter().collect(),
                InstructionKind::Run(r) => {
                    r.mounts.iter().filter_map(|m| m.from.as_deref()).collect()
                }
                _ => Vec::new(),
            };
            for f in froms {
                if let Some(i) = self.stage_index(f, idx)
                    && !deps.contains(&i)
                {
                    deps.push(i);
                }
            }
        }
        deps
    }

    /// Builds stage `idx`, after building the stages it needs — those in parallel.
    pub(crate) fn stage(&self, idx: usize) -> Result<StageResult> {
        let mut slot = self.slots[idx].lock().map_err(|_| {
            Error::invalid(format!("build stage {idx}"), "a parallel stage panicked")
        })?;
        if let Some(r) = slot.as_ref() {
            return Ok(r.clone());
        }
        let deps = self.deps(idx);
        if deps.len() > 1 {
            std::thread::scope(|s| {
                let handles: Vec<_> = deps
                    .iter()
                    .map(|&d| s.spawn(move || self.stage(d)))
                    .collect();
                let mut first_err = None;
                for h in handles {
                    match h.join() {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            first_err.get_or_insert(e);
                        }
                        Err(_) => {
                            first_err.get_or_insert(Error::invalid(
                                "build a stage",
                                "the stage's thread panicked",
                            ));
                        }
                    }
                }
                first_err.map_or(Ok(()), Err)
            })?;
        } else {
            for &d in &deps {
                self.stage(d)?;
            }
        }
        let result = self.build_stage(idx)?;
        *slot = Some(result.clone());
        Ok(result)
    }

    /// The image (stage or store image, pulled if needed) a `--from` names, with its key.
    pub(crate) fn source_image(
        &self,
        name: &str,
        before: usize,
        line: usize,
    ) -> Result<StageResult> {
        if let Some(i) = self.stage_index(name, before) {
            return self.stage(i);
        }
        let platform = self.stage_platform(before)?;
        self.resolve_image(name, line, &platform)
    }

    /// A store image (an index resolved to `platform`'s manifest), pulled when it is not in
    /// the store and a registry is configured.
    fn resolve_image(&self, name: &str, line: usize, platform: &Platform) -> Result<StageResult> {
        let found = image::resolve(self.store, name).and_then(|d| {
            image::select(self.store, name, &d, platform)?.ok_or_else(|| Error::ImageNotFound {
                reference: name.to_owned(),
                hint: None,
            })
        });
        let found = match (found, self.registry, self.rt.as_ref()) {
            (Err(Error::ImageNotFound { .. }), Some(client), Some(handle)) => {
                let reference: Reference = name.parse().map_err(|e| {
                    self.err(line, format!("invalid image reference `{name}`: {e}"))
                })?;
                self.progress.emit(BuildEvent::Pulling {
                    reference: reference.to_string(),
                });
                let digest = crate::registry::pull_blocking(
                    handle,
                    self.store,
                    client,
                    &reference,
                    Some(platform),
                )
                .map_err(|e| match e {
                    e @ Error::NoPlatform { .. } => e,
                    e => Error::Pull {
                        file: self.file.clone(),
                        line,
                        reference: reference.to_string(),
                        source: Box::new(e),
                    },
                })?;
                image::resolve(self.store, &digest.to_string())
            }
            (other, _, _) => other,
        };
        let desc = found.map_err(|e| match e {
            Error::ImageNotFound { reference, .. } => self.err(
                line,
                format!("image {reference} is not in the local store (build it, or pull it with `rbuild pull {reference}`)"),
            ),
            Error::NoPlatform {
                reference,
                platform,
                available,
            } => self.err(
                line,
                format!(
                    "image {reference} has no manifest for {platform} (it has: {})",
                    available.join(", ")
                ),
            ),
            other => other,
        })?;
        let digest =
            Digest::try_from(desc.digest()).map_err(Error::op("read a manifest digest"))?;
        let img = image::load(self.store, &digest)?;
        if !img.config.architecture.is_empty()
            && !platform.matches(
                &img.config.os,
                &img.config.architecture,
                img.config.variant.as_deref(),
            )
        {
            let theirs = Platform {
                os: img.config.os.clone(),
                architecture: img.config.architecture.clone(),
                variant: img.config.variant.clone(),
            };
            return Err(self.err(
                line,
                format!(
                    "image {name} is for {theirs}, not {platform} (name an image or index that has {platform}, or use FROM --platform={theirs})"
                ),
            ));
        }
        Ok(StageResult {
            config: img.config,
            layers: img.layers,
            key: digest.to_string(),
        })
    }

    /// The image stage `idx` starts from (an earlier stage, scratch, or a store/registry image)
    /// and the FROM line to show for it.
    fn stage_base(&self, idx: usize) -> Result<(StageResult, String)> {
        let from_line = self.df.stages[idx].from.span.start_line;
        let base_name = self.base_name_of(idx)?;
        let platform = self.stage_platform(idx)?;
        Ok(if let Some(e) = self.stage_index(&base_name, idx) {
            (self.stage(e)?, format!("FROM {base_name}"))
        } else if base_name == "scratch" {
            (
                StageResult {
                    config: ImageConfig::scratch(&platform),
                    layers: Vec::new(),
                    key: crate::key::scratch(&platform).hex().to_owned(),
                },
                "FROM scratch".to_owned(),
            )
        } else {
            let r = self.resolve_image(&base_name, from_line, &platform)?;
            let shown = base_name
                .parse::<Reference>()
                .map_or_else(|_| base_name.clone(), |r| r.to_string());
            let text = format!("FROM {shown}@{}", r.key);
            (r, text)
        })
    }

    /// The ONBUILD triggers of `base`, taken out of its config: they run first, as if written
    /// right after FROM (at its line), and the new image does not inherit them (docker).
    fn onbuild_triggers(
        &self,
        base: &mut StageResult,
        from_line: usize,
    ) -> Result<Vec<Instruction>> {
        let mut instructions = Vec::new();
        if let Some(triggers) = base.config.config.extra.remove("OnBuild")
            && let Some(list) = triggers.as_array()
        {
            for t in list.iter().filter_map(|t| t.as_str()) {
                let df =
                    rbuild_dockerfile::parse(&format!("FROM scratch\n{t}\n")).map_err(|e| {
                        self.err(
                            from_line,
                            format!("ONBUILD trigger `{t}` of the base image: {}", e.kind()),
                        )
                    })?;
                for mut inst in df.stages.into_iter().flat_map(|s| s.instructions) {
                    inst.span.start_line = from_line;
                    inst.span.end_line = from_line;
                    instructions.push(inst);
                }
            }
        }
        Ok(instructions)
    }

    /// Builds stage `idx` on its base (whose stages are built): plan, then each step from the
    /// cache or executed.
    fn build_stage(&self, idx: usize) -> Result<StageResult> {
        let stage = &self.df.stages[idx];
        let from_line = stage.from.span.start_line;
        let (mut base, from_text) = self.stage_base(idx)?;
        let mut instructions = self.onbuild_triggers(&mut base, from_line)?;
        instructions.extend(stage.instructions.iter().cloned());
        let total = instructions.len() + 1;
        self.total.fetch_add(total, Ordering::Relaxed);
        let shown = if self.opts.platforms.is_empty() {
            None
        } else {
            Some(self.stage_platform(idx)?)
        };
        self.progress.emit(BuildEvent::StepStarted {
            stage: idx,
            stage_name: stage.name.clone(),
            index: 1,
            total,
            text: from_text,
            cached: false,
            platform: shown.clone(),
        });
        let mut view = image::ensure_unpacked(self.store, &base.layers)?;
        let steps = self.plan(idx, &instructions, &base)?;
        let no_cache = self.opts.no_cache
            || stage.name.as_deref().is_some_and(|n| {
                self.opts
                    .no_cache_filter
                    .iter()
                    .any(|f| f.eq_ignore_ascii_case(n))
            });

        if !no_cache && !self.opts.cache_from.is_empty() {
            self.remote_lookup(&steps);
        }
        let mut config = base.config.clone();
        config.created = None;
        let mut layers = base.layers.clone();
        let mut key = base.key.clone();
        let mut last_created = None;
        for st in &steps {
            if self.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            key = st.key.clone();
            let started = Instant::now();
            let record = self.step_result(
                (idx, stage.name.as_deref(), shown.as_ref()),
                total,
                st,
                no_cache,
                &view,
            )?;
            if let Ok(mut e) = self.exported.lock() {
                e.push((st.key.clone(), record.clone()));
            }
            if let Some(l) = &record.layer {
                config.rootfs.diff_ids.push(l.diff_id.to_string());
                layers.push(l.clone());
                let mut dirs = vec![self.store.layer_dir(&l.diff_id)];
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
            self.progress.emit(BuildEvent::StepFinished {
                stage: idx,
                index: st.index,
                elapsed: started.elapsed(),
            });
        }
        config.created = Some(if self.opts.source_date_epoch.is_some() {
            now_rfc3339(self.opts.source_date_epoch)
        } else {
            last_created
                .or_else(|| base.config.created.clone())
                .unwrap_or_else(|| now_rfc3339(None))
        });
        Ok(StageResult {
            config,
            layers,
            key,
        })
    }

    /// One step's result: from the local cache, from a `--cache-from` repository, or executed
    /// (and recorded in the cache); reports the step as it goes.
    fn step_result(
        &self,
        (idx, stage_name, platform): (usize, Option<&str>, Option<&Platform>),
        total: usize,
        st: &Step,
        no_cache: bool,
        view: &LayerView,
    ) -> Result<StepRecord> {
        let lock = self.inflight.of(&st.key);
        let _running = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut hit = if no_cache {
            None
        } else {
            self.cache_lookup(&st.key)?
        };
        if hit.is_none() && !no_cache && self.remote_fetch(&st.key) {
            hit = self.cache_lookup(&st.key)?;
        }
        self.progress.emit(BuildEvent::StepStarted {
            stage: idx,
            stage_name: stage_name.map(str::to_owned),
            index: st.index,
            total,
            text: st.display.clone(),
            cached: hit.is_some(),
            platform: platform.cloned(),
        });
        if hit.is_none() && self.opts.explain {
            let prev = self
                .last_record
                .stages
                .get(&idx)
                .and_then(|s| s.get(st.index - 2));
            let reason = if no_cache {
                "--no-cache".to_owned()
            } else {
                explain::explain(prev, &st.inputs)
            };
            self.progress.emit(BuildEvent::CacheMiss {
                stage: idx,
                index: st.index,
                reason,
            });
        }
        if let Ok(mut r) = self.record.lock() {
            r.stages.entry(idx).or_default().push(st.inputs.clone());
        }
        Ok(match hit {
            Some(r) => {
                self.cached.fetch_add(1, Ordering::Relaxed);
                r
            }
            None => {
                let layer = self.execute(idx, st, view)?;
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
                self.store
                    .cache_put(&st.key, &entry)
                    .map_err(Error::op("record a step in the cache"))?;
                record
            }
        })
    }

    /// Asks the `--cache-from` repositories for every step of a stage, in one parallel batch.
    fn remote_lookup(&self, steps: &[Step]) {
        let (Some(client), Some(handle)) = (self.registry, self.rt.as_ref()) else {
            self.progress.emit(BuildEvent::Warning(
                "--cache-from needs a registry client and a tokio runtime; the remote cache is not used".to_owned(),
            ));
            return;
        };
        let keys: Vec<String> = steps.iter().map(|s| s.key.clone()).collect();
        let hits = crate::remote_cache::lookup(handle, client, &self.opts.cache_from, &keys);
        if let Ok(mut h) = self.remote_hits.lock() {
            h.extend(hits);
        }
    }

    /// Brings a step found by [`Self::remote_lookup`] into the local cache; false when there is
    /// none or it could not be fetched (the step then runs).
    fn remote_fetch(&self, key: &str) -> bool {
        let hit = match self.remote_hits.lock() {
            Ok(h) => h.get(key).cloned(),
            Err(_) => None,
        };
        let (Some(hit), Some(client), Some(handle)) = (hit, self.registry, self.rt.as_ref()) else {
            return false;
        };
        match crate::remote_cache::fetch(handle, client, self.store, key, &hit) {
            Ok(()) => true,
            Err(e) => {
                self.progress.emit(BuildEvent::Warning(format!(
                    "remote cache entry not used: {e}"
                )));
                false
            }
        }
    }

    /// A cache hit whose layer is usable (blob present; unpacked dir present or re-made).
    fn cache_lookup(&self, key: &str) -> Result<Option<StepRecord>> {
        let Some(entry) = self
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
            if !self.store.has_blob(&l.digest) {
                return Ok(None);
            }
            if !self.store.has_layer_dir(&l.diff_id) {
                image::ensure_unpacked(self.store, std::slice::from_ref(l))?;
            }
        }
        Ok(Some(record))
    }
}
