//! Builds an image through the `rbuild` library API alone: options builder, progress events and
//! the resulting digest.
//!
//! ```text
//! cargo run -p rbuild --example build_image -- CONTEXT [TAG]
//! ```
//! (as root: RUN steps use namespaces and overlayfs; the store is `$RBUILD_ROOT` or
//! `~/.local/share/rbuild`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test or benchmark stops at the first failed set-up step"
)]

use std::path::PathBuf;

use rbuild::{BuildEvent, BuildOptions, Builder, Store};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let context = PathBuf::from(args.next().unwrap_or_else(|| ".".to_owned()));
    let tag = args
        .next()
        .unwrap_or_else(|| "localhost/example:latest".to_owned());
    let root = std::env::var_os("RBUILD_ROOT").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share/rbuild"),
        PathBuf::from,
    );

    let store = Store::open(&root)?;
    let builder = Builder::new(store).progress(|event: BuildEvent| match event {
        BuildEvent::StepStarted {
            index,
            total,
            text,
            cached,
            ..
        } => {
            println!(
                "[{index}/{total}] {}{text}",
                if cached { "CACHED " } else { "" }
            );
        }
        BuildEvent::StepOutput { bytes, .. } => print!("{}", String::from_utf8_lossy(&bytes)),
        BuildEvent::Warning(w) => eprintln!("warning: {w}"),
        _ => {}
    });
    let options = BuildOptions::new(context)
        .tag(tag.parse()?)
        .build_arg("VERSION", env!("CARGO_PKG_VERSION"));
    let output = builder.build(options).await?;
    println!(
        "built {} ({} of {} steps from the cache)",
        output.digest, output.cached_steps, output.total_steps
    );
    Ok(())
}
