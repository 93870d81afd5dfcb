//! Planning a stage: every instruction expanded, its effect on the config applied, its cache
//! key computed — before anything runs (docs/ARCHITECTURE.md, "cache keys"). RUN mounts and COPY/ADD
//! sources are resolved here, so their contents are part of the key.

use std::collections::BTreeMap;

use rbuild_dockerfile::{Instruction, InstructionKind, MountType};
use sha2::Digest as _;

use crate::context::{Context, clean_rel};
use crate::copy::{self, CopyRequest};
use crate::error::{Error, Result};
use crate::events::BuildEvent;
use crate::explain::StepInputs;
use crate::image;
use crate::key::{self, Input, StepKey};
use crate::stage::{Build, StageResult};
use crate::step::{self, Action, PlanState, Step};

impl Build<'_> {
    /// ADD of a URL: the body, checked against `--checksum` when given. Downloaded at planning
    /// time, so the content is part of the step's key (a changed file misses the cache).
    fn download(&self, url: &str, checksum: Option<&str>, line: usize) -> Result<Vec<u8>> {
        let fetched = match &self.rt {
            Some(rt) => crate::download::fetch(rt, self.store, &self.opts.download, url, checksum),
            None => Err(crate::download::DownloadError::NoRuntime),
        };
        fetched.map_err(|source| Error::Download {
            file: self.file.clone(),
            line,
            url: url.to_owned(),
            source: Box::new(source),
        })
    }

    /// Plans every instruction of a stage: expansion, config effects, cache keys.
    pub(crate) fn plan(
        &self,
        idx: usize,
        instructions: &[Instruction],
        base: &StageResult,
    ) -> Result<Vec<Step>> {
        let lexer = self.lexer();
        let platform = self.stage_platform(idx)?;
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
                .map_err(|e| self.err(line, crate::error::dockerfile_message(&e)))?;
            for name in &report.unset {
                self.progress.emit(BuildEvent::Warning(format!(
                    "{}:{line}: variable ${name} is not set (it expands to an empty string)",
                    self.file
                )));
            }
            let display = format!("{} {}", expanded.keyword(), display_args(&inst.original));
            let mut inputs: Vec<Input> = Vec::new();
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
                    let spec = CopySpec {
                        keyword: "COPY",
                        sources: &c.sources,
                        dest: &c.dest,
                        chown: c.chown.as_deref(),
                        chmod: c.chmod.as_deref(),
                        from: c.from.as_deref(),
                        heredocs: &c.heredocs,
                        expand_heredocs: true,
                        add: false,
                        exclude: &c.exclude,
                        parents: c.parents,
                        checksum: None,
                    };
                    self.plan_copy(idx, &st, line, &spec, &mut inputs)?
                }
                InstructionKind::Add(a) => {
                    let spec = CopySpec {
                        keyword: "ADD",
                        sources: &a.sources,
                        dest: &a.dest,
                        chown: a.chown.as_deref(),
                        chmod: a.chmod.as_deref(),
                        from: None,
                        heredocs: &a.heredocs,
                        expand_heredocs: true,
                        add: a.unpack != Some(false),
                        exclude: &a.exclude,
                        parents: false,
                        checksum: a.checksum.as_deref(),
                    };
                    self.plan_copy(idx, &st, line, &spec, &mut inputs)?
                }
                InstructionKind::Run(run) => {
                    let (action, text) =
                        step::plan_simple(&mut st, &expanded).map_err(|m| self.err(line, m))?;
                    let action = self.plan_run(idx, action, run, &st, line, &mut inputs)?;
                    (action, text)
                }
                InstructionKind::Healthcheck(h) => {
                    st.config.extra.insert(
                        "Healthcheck".to_owned(),
                        crate::step::healthcheck_json(h, &st.shell),
                    );
                    (
                        Action::ConfigOnly,
                        format!("HEALTHCHECK {}", display_args(&inst.original)),
                    )
                }
                InstructionKind::From(_) => {
                    return Err(self.err(line, "unexpected FROM inside a stage"));
                }
                _ => step::plan_simple(&mut st, &expanded).map_err(|m| self.err(line, m))?,
            };
            // The build args a step reads: RUN sees every visible one in its environment (and
            // heredoc bodies are expanded with all of them); any other instruction only those
            // its text uses — an unused arg must not miss the cache (BuildKit).
            let reads_all_args = match &expanded.kind {
                InstructionKind::Run(_) => true,
                InstructionKind::Copy(c) => !c.heredocs.is_empty(),
                InstructionKind::Add(a) => !a.heredocs.is_empty(),
                _ => false,
            };
            let keyed_args: Vec<String> = visible_before
                .iter()
                .filter(|kv| {
                    reads_all_args
                        || report
                            .used
                            .contains(kv.split_once('=').map_or(kv.as_str(), |(k, _)| k))
                })
                .cloned()
                .collect();
            let key = StepKey {
                schema: key::SCHEMA,
                parent: &parent,
                instruction: &created_by,
                args: &keyed_args,
                inputs: &inputs,
                platform: &platform,
                compression: self.opts.compression,
                compression_level: self.opts.layer_options().get_level(),
                source_date_epoch: self.opts.source_date_epoch,
            }
            .digest()
            .hex()
            .to_owned();
            // Instructions that only shape the image config (LABEL, EXPOSE, CMD, ...) and ARG
            // (whose value reaches later steps through their own keys) do not change what
            // later steps run on: they stay out of the key chain, so changing one does not
            // re-run every step after it.
            let chains = !matches!(
                &expanded.kind,
                InstructionKind::Arg(_)
                    | InstructionKind::Label(_)
                    | InstructionKind::Expose(_)
                    | InstructionKind::Cmd(_)
                    | InstructionKind::Entrypoint(_)
                    | InstructionKind::Healthcheck(_)
                    | InstructionKind::StopSignal(_)
                    | InstructionKind::Maintainer(_)
                    | InstructionKind::Volume(_)
                    | InstructionKind::Onbuild(_)
            );
            if chains {
                st.key = key.clone();
            }
            let files = match &action {
                Action::Copy(plan) => files_of(plan),
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

    /// RUN: mounts (their sources go into the key, secrets never do) and network.
    fn plan_run(
        &self,
        idx: usize,
        action: Action,
        run: &rbuild_dockerfile::Run,
        st: &PlanState,
        line: usize,
        inputs: &mut Vec<Input>,
    ) -> Result<Action> {
        let Action::Run {
            mut args,
            env,
            cwd,
            user,
            ..
        } = action
        else {
            return Ok(action);
        };
        let mut heredoc_file = None;
        if let Some(script) = run.script() {
            // BuildKit: a RUN that is a single heredoc with a shebang runs that file; otherwise
            // the shell gets the command line with the heredoc bodies.
            let single = matches!(&run.command, rbuild_dockerfile::Command::Shell(c) if matches!(rbuild_dockerfile::parse_heredoc(c), Ok(Some(_))));
            if single && script.starts_with("#!") {
                let name = run
                    .heredocs
                    .first()
                    .map_or("script", |h| h.name.as_str())
                    .to_owned();
                heredoc_file = Some((name.clone(), script.clone()));
                args = vec![format!("/dev/pipes/{name}")];
            } else {
                args = st.shell.clone();
                args.push(script.clone());
            }
            inputs.push(Input::Heredoc {
                script: script.clone(),
            });
        }
        let network_none = match run.network.as_deref() {
            None | Some("default") => self.opts.network == rbuild_sandbox::Network::None,
            Some("host") => false,
            Some("none") => true,
            Some(other) => {
                return Err(self.err(
                    line,
                    format!("RUN --network={other} is not supported (use default, host or none)"),
                ));
            }
        };
        let mut mounts = Vec::new();
        for m in &run.mounts {
            // Every option the step can observe is in the key (ids, env, uid/gid/mode, rw,
            // readonly, sharing, ...): the mount as written, after expansion. Secret values are
            // not in it, only their ids (BuildKit keys secrets the same way).
            let mut source_key = None;
            if m.kind == MountType::Bind {
                match m.from.as_deref() {
                    None | Some("context") => {
                        let rel =
                            clean_rel(m.source.as_deref().unwrap_or("")).ok_or_else(|| {
                                self.err(line, "RUN --mount source is outside the build context")
                            })?;
                        let digest = self.with_context(|ctx, cache| {
                            // What the step will see: the source resolved inside the context
                            // (a link followed), everything below it that .dockerignore lets
                            // through, links with their targets.
                            let resolved = if rel.is_empty() {
                                Some(String::new())
                            } else {
                                ctx.follow(&rel)
                            };
                            let Some(resolved) = resolved else {
                                return Ok(String::from("missing"));
                            };
                            ctx.hash_files(std::slice::from_ref(&resolved), cache)
                                .map_err(Error::op("hash the bind mount's source"))?;
                            let mut h = sha2::Sha256::new();
                            let mut add = |k: &str, e: &crate::context::Entry| {
                                let (kind, link) = match &e.kind {
                                    crate::context::EntryKind::Symlink(t) => {
                                        ("l", t.to_string_lossy().into_owned())
                                    }
                                    crate::context::EntryKind::Dir => ("d", String::new()),
                                    crate::context::EntryKind::File => ("f", String::new()),
                                };
                                h.update(format!(
                                    "{k}\0{kind}\0{:o}\0{link}\0{}\n",
                                    e.mode,
                                    e.sha256.as_deref().unwrap_or("")
                                ));
                            };
                            if let Some(e) = ctx.entries().get(&resolved) {
                                add("", e);
                            }
                            for (_, below, e) in ctx.below(&resolved) {
                                add(below, e);
                            }
                            Ok(hex::encode(h.finalize()))
                        })?;
                        source_key = Some(digest);
                    }
                    Some(from) => {
                        let src = self.source_image(from, idx, line)?;
                        source_key = Some(src.key);
                    }
                }
            }
            inputs.push(Input::Mount {
                spec: m.raw.clone(),
                source: source_key,
            });
            mounts.push(m.clone());
        }
        if network_none {
            inputs.push(Input::NetworkNone);
        }
        // BuildKit's entitlement: the Dockerfile asks, the person running the build allows.
        let insecure = match run.security.as_deref() {
            None | Some("sandbox") => false,
            Some("insecure") if self.opts.allow_insecure => true,
            Some("insecure") => {
                return Err(self.err(
                    line,
                    "RUN --security=insecure is not allowed: it runs the step with every \
                     capability and no seccomp filter; pass --allow security.insecure to \
                     rbuild build if you trust this Dockerfile",
                ));
            }
            Some(other) => {
                return Err(self.err(
                    line,
                    format!("RUN --security={other} is not supported (use sandbox or insecure)"),
                ));
            }
        };
        if insecure {
            inputs.push(Input::Insecure);
        }
        Ok(Action::Run {
            args,
            env,
            cwd,
            user,
            mounts,
            network_none,
            insecure,
            heredoc_file,
        })
    }

    fn plan_copy(
        &self,
        idx: usize,
        st: &PlanState,
        line: usize,
        spec: &CopySpec<'_>,
        inputs: &mut Vec<Input>,
    ) -> Result<(Action, String)> {
        let kw = spec.keyword;
        if let Some(u) = spec.chown
            && u.is_empty()
        {
            return Err(self.err(line, format!("{kw} --chown: empty user")));
        }
        let chmod = match spec.chmod {
            Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| {
                self.err(
                    line,
                    format!("{kw} --chmod={m}: expected an octal mode such as 0755"),
                )
            })?),
            None => None,
        };
        let workdir = st
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".to_owned());
        let mut sources: Vec<String> = spec.sources.to_vec();
        let mut urls = Vec::new();
        if spec.add {
            sources.retain(|s| {
                let remote = s.starts_with("http://") || s.starts_with("https://");
                if remote {
                    urls.push(s.clone());
                }
                !remote
            });
        }
        let origin = match spec.from {
            Some(from) => format!("`{from}` (COPY --from)"),
            None => "the build context".to_owned(),
        };
        let req = CopyRequest {
            sources: &sources,
            dest: spec.dest,
            workdir: &workdir,
            chown: spec.chown,
            chmod,
            keyword: kw,
            exclude: spec.exclude,
            parents: spec.parents,
            keep_owners: spec.from.is_some(),
            origin: &origin,
        };
        let mut plan = if sources.is_empty() && (!spec.heredocs.is_empty() || !urls.is_empty()) {
            copy::CopyPlan::empty(kw, spec.dest, &workdir, spec.chown)
        } else if let Some(from) = spec.from {
            let src = self.source_image(from, idx, line)?;
            let src_view = image::ensure_unpacked(self.store, &src.layers)?;
            let mut ctx = Context::from_view(&src_view, &sources)
                .map_err(|e| self.err(line, format!("{kw} --from={from}: {e}")))?;
            // Keyed by the content of what is copied (BuildKit's file op does the same): a
            // source stage rebuilt with the same files does not re-run this step.
            self.with_layer_hashes(|cache| copy::plan(&mut ctx, cache, &req))?
                .map_err(|m| self.err(line, m))?
        } else {
            self.with_context(|ctx, cache| {
                copy::plan(ctx, cache, &req).map_err(|m| self.err(line, m))
            })?
        };
        let named = spec.sources.len() + spec.heredocs.len();
        for h in spec.heredocs {
            let body = h.body();
            let content = if spec.expand_heredocs && h.expand {
                let lookup = |n: &str| st.lookup(n);
                self.lexer()
                    .raw_quotes(true)
                    .skip_process_quotes(true)
                    .expand_word(&body, &lookup)
                    .map_err(|e| self.err(line, format!("{kw} heredoc {}: {e}", h.name)))?
                    .value
            } else {
                body
            };
            plan.add_inline(
                &h.name,
                format!("<<{}", h.name),
                content.into_bytes(),
                chmod.unwrap_or(0o644),
            );
        }
        for url in &urls {
            let bytes = self.download(url, spec.checksum, line)?;
            let name = url
                .split(['?', '#'])
                .next()
                .unwrap_or(url)
                .rsplit('/')
                .find(|s| !s.is_empty() && !s.contains(':'))
                .unwrap_or("index.html")
                .to_owned();
            // docker: a file downloaded by ADD gets mode 0600 unless --chmod says otherwise.
            plan.add_inline(&name, url.clone(), bytes, chmod.unwrap_or(0o600));
        }
        if named > 1 {
            plan.many_sources = true;
            for it in &mut plan.items {
                it.whole = false;
            }
        }
        if spec.add {
            plan.mark_archives();
        }
        plan.seal();
        inputs.push(Input::Copy {
            digest: plan.digest.clone(),
        });
        let mut shown: Vec<String> = spec.sources.to_vec();
        shown.extend(spec.heredocs.iter().map(|h| format!("<<{}", h.name)));
        let from = spec
            .from
            .map(|f| format!("--from={f} "))
            .unwrap_or_default();
        let created_by = format!("{kw} {from}{} {} # buildkit", shown.join(" "), spec.dest);
        Ok((Action::Copy(plan), created_by))
    }
}

/// The parts of COPY and ADD the planner needs.
pub(crate) struct CopySpec<'s> {
    pub keyword: &'static str,
    pub sources: &'s [String],
    pub dest: &'s str,
    pub chown: Option<&'s str>,
    pub chmod: Option<&'s str>,
    pub from: Option<&'s str>,
    pub heredocs: &'s [rbuild_dockerfile::Heredoc],
    pub expand_heredocs: bool,
    pub add: bool,
    pub exclude: &'s [String],
    pub parents: bool,
    pub checksum: Option<&'s str>,
}

/// A COPY's sources in `--explain` form: source path → what lands where.
fn files_of(plan: &copy::CopyPlan) -> BTreeMap<String, String> {
    plan.items
        .iter()
        .map(|it| (it.label.clone(), copy::describe(it)))
        .collect()
}

/// The arguments part of an instruction's source text, on one line.
fn display_args(original: &str) -> String {
    let text = original.trim();
    let rest = text.split_once(char::is_whitespace).map_or("", |(_, r)| r);
    rest.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ImageConfig;
    use crate::options::BuildOptions;
    use rbuild_oci::Platform;
    use rbuild_store::Store;

    /// Plans the only stage of `dockerfile` (on scratch) with `opts`.
    fn plan_with(
        dockerfile: &str,
        opts: impl FnOnce(BuildOptions) -> BuildOptions,
    ) -> Result<Vec<Step>> {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(ctx.join("f"), "f").unwrap();
        std::fs::write(ctx.join("g"), "g").unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let opts = opts(BuildOptions::new(&ctx));
        let df = rbuild_dockerfile::parse(dockerfile).unwrap();
        let instructions = df.stages[0].instructions.clone();
        let events = rbuild_oci::Events::none();
        let mut b = Build::new(&store, &events, &opts, "Dockerfile".into(), df, 0);
        b.resolve_meta_args()?;
        let base = StageResult {
            config: ImageConfig::scratch(&Platform::host()),
            layers: Vec::new(),
            key: "base".into(),
        };
        b.plan(0, &instructions, &base)
    }

    fn plan(dockerfile: &str) -> Vec<Step> {
        plan_with(dockerfile, |o| o).unwrap()
    }

    fn keys(steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| s.key.clone()).collect()
    }

    #[test]
    fn config_only_instructions_stay_out_of_the_key_chain() {
        let steps = plan("FROM scratch\nRUN a\nLABEL x=1\nEXPOSE 80\nARG A\nCMD [\"x\"]\nRUN b\n");
        let parents: Vec<&str> = steps.iter().map(|s| s.inputs.parent.as_str()).collect();
        // Every step after `RUN a` hangs off `RUN a`; `RUN b` does not see LABEL/EXPOSE/ARG/CMD.
        assert_eq!(parents[0], "base");
        assert!(
            parents[1..].iter().all(|p| *p == steps[0].key),
            "{parents:?}"
        );
        assert!(steps.iter().all(|s| s.key.len() == 64));
    }

    #[test]
    fn a_step_keys_only_the_build_args_it_can_read() {
        let df = "FROM scratch\nARG A=1\nARG B=f\nCOPY f /f\nCOPY $B /g\nRUN make\n";
        let steps = plan(df);
        let args: Vec<&Vec<String>> = steps.iter().map(|s| &s.inputs.args).collect();
        assert!(args[0].is_empty() && args[1] == &vec!["A=1".to_owned()]);
        // Both COPYs see A and B; the step key holds only what each text uses.
        let changed_a = plan_with(df, |o| o.build_arg("A", "9")).unwrap();
        let changed_b = plan_with(df, |o| o.build_arg("B", "g")).unwrap();
        let base = keys(&steps);
        let a = keys(&changed_a);
        let b = keys(&changed_b);
        // A is read by RUN only (step 6): COPY f and COPY $B keep their keys.
        assert_eq!(a[2..4], base[2..4]);
        assert_ne!(a[4], base[4]);
        // B is read by `COPY $B` (step 5) and RUN.
        assert_eq!(b[2], base[2]);
        assert_ne!(b[3], base[3]);
        assert_ne!(b[4], base[4]);
        // An arg nobody declares changes nothing.
        assert_eq!(
            keys(&plan_with(df, |o| o.build_arg("Z", "1")).unwrap()),
            base
        );
    }

    #[test]
    fn run_options_and_build_settings_are_in_the_key() {
        let plain = keys(&plan("FROM scratch\nRUN make\n"));
        let variants = [
            keys(&plan("FROM scratch\nRUN --network=none make\n")),
            keys(&plan(
                "FROM scratch\nRUN --mount=type=cache,target=/c make\n",
            )),
            keys(&plan("FROM scratch\nRUN make all\n")),
            keys(&plan_with("FROM scratch\nRUN make\n", |o| o.source_date_epoch(1)).unwrap()),
            keys(
                &plan_with("FROM scratch\nRUN make\n", |o| {
                    o.compression(rbuild_layer::Compression::Zstd)
                })
                .unwrap(),
            ),
        ];
        for v in &variants {
            assert_ne!(v, &plain);
        }
        // Planning is deterministic.
        assert_eq!(keys(&plan("FROM scratch\nRUN make\n")), plain);
    }

    #[test]
    fn errors_name_the_line() {
        let err = plan_with(
            "FROM scratch\nRUN true\nRUN --security=insecure make\n",
            |o| o,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::Dockerfile { line: 3, message, .. } if message.contains("--allow security.insecure")),
            "{err}"
        );
        let err = plan_with("FROM scratch\nCOPY --chmod=9z f /f\n", |o| o).unwrap_err();
        assert!(matches!(err, Error::Dockerfile { line: 2, .. }), "{err}");
    }
}
