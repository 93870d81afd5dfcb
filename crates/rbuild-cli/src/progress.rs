//! Showing build progress: plain lines for CI and pipes, a live display on a terminal.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rbuild::BuildEvent;

/// How to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One line per step on stdout, RUN output as it comes.
    Plain,
    /// A live display on stderr.
    Tty,
}

impl Mode {
    /// `Tty` when stderr is a terminal, else `Plain`.
    pub(crate) fn auto() -> Self {
        if std::io::stderr().is_terminal() {
            Self::Tty
        } else {
            Self::Plain
        }
    }
}

struct State {
    mode: Mode,
    bar: Option<ProgressBar>,
    /// Output of the running step, kept to show when it fails (live display only).
    at_line_start: bool,
}

/// Renders [`BuildEvent`]s.
#[derive(Clone)]
pub(crate) struct Renderer {
    state: Arc<Mutex<State>>,
}

fn label(
    platform: Option<&rbuild::Platform>,
    stage_name: Option<&str>,
    index: usize,
    total: usize,
) -> String {
    // BuildKit's form: `[linux/arm64 build 2/3]`.
    let platform = platform.map(|p| format!("{p} ")).unwrap_or_default();
    match stage_name {
        Some(n) => format!("[{platform}{n} {index}/{total}]"),
        None => format!("[{platform}{index}/{total}]"),
    }
}

impl Renderer {
    /// A renderer in `mode`.
    pub(crate) fn new(mode: Mode) -> Self {
        let bar = (mode == Mode::Tty).then(|| {
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.enable_steady_tick(Duration::from_millis(100));
            pb
        });
        Self {
            state: Arc::new(Mutex::new(State {
                mode,
                bar,
                at_line_start: true,
            })),
        }
    }

    /// A progress sink for the builder.
    pub(crate) fn sink(&self) -> impl Fn(BuildEvent) + Send + Sync + 'static {
        let this = self.clone();
        move |e| this.event(e)
    }

    fn event(&self, e: BuildEvent) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        match e {
            BuildEvent::StepStarted {
                stage_name,
                index,
                total,
                text,
                cached,
                platform,
                ..
            } => {
                let line = format!(
                    "{}{} {text}",
                    if cached { "CACHED " } else { "" },
                    label(platform.as_ref(), stage_name.as_deref(), index, total)
                );
                match &st.bar {
                    Some(pb) => {
                        if cached {
                            pb.println(format!("  {line}"));
                        } else {
                            pb.set_message(line);
                        }
                    }
                    None => {
                        if !st.at_line_start {
                            println!();
                            st.at_line_start = true;
                        }
                        println!("{line}");
                    }
                }
            }
            BuildEvent::StepOutput { bytes, .. } if st.mode == Mode::Plain => {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&bytes);
                let _ = out.flush();
                if let Some(&last) = bytes.last() {
                    st.at_line_start = last == b'\n';
                }
            }
            BuildEvent::StepFinished { elapsed, .. } => {
                if let Some(pb) = &st.bar {
                    let msg = pb.message();
                    if !msg.is_empty() {
                        pb.println(format!("  {msg} ({:.1}s)", elapsed.as_secs_f64()));
                        pb.set_message(String::new());
                    }
                }
            }
            BuildEvent::Pulling { reference } => match &st.bar {
                Some(pb) => pb.println(format!("  pulling {reference}")),
                None => println!("pulling {reference}"),
            },
            BuildEvent::CacheMiss { reason, .. } => match &st.bar {
                Some(pb) => pb.println(format!("  cache miss: {reason}")),
                None => println!("  cache miss: {reason}"),
            },
            BuildEvent::Warning(w) => match &st.bar {
                Some(pb) => pb.println(format!("warning: {w}")),
                None => eprintln!("warning: {w}"),
            },
            BuildEvent::ImageWritten { tags, .. } => {
                for t in tags {
                    match &st.bar {
                        Some(pb) => pb.println(format!("  tagged {t}")),
                        None => println!("tagged {t}"),
                    }
                }
            }
            _ => {}
        }
    }

    /// Clears the live display.
    pub(crate) fn finish(&self) {
        if let Ok(mut st) = self.state.lock() {
            if let Some(pb) = st.bar.take() {
                pb.finish_and_clear();
            }
            if !st.at_line_start {
                println!();
            }
        }
    }
}
