//! Pushing an image: blobs the registry lacks (skip, mount or upload, in parallel), then the
//! manifest unless the registry already has the same digest under the tag.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use rbuild_oci::{Digest, Reference};

use crate::blob::{BlobSource, MountOutcome};
use crate::client::Client;
use crate::error::Result;
use rbuild_oci::Events;

/// A blob an image refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type (informational).
    pub media_type: String,
}

/// An image to push, independent of where its blobs live.
#[derive(Debug, Clone)]
pub struct ImageToPush {
    /// The manifest exactly as it will be stored (its digest is over these bytes).
    pub manifest_bytes: Vec<u8>,
    /// The manifest's media type (OCI or Docker v2s2).
    pub manifest_media_type: String,
    /// The config blob.
    pub config: BlobRef,
    /// The layers, in manifest order.
    pub layers: Vec<BlobRef>,
    /// Repositories on the target registry that may hold these blobs (e.g. where the base
    /// image was pulled from): missing blobs are mounted from them before uploading.
    pub mount_from: Vec<Reference>,
}

/// What happened to one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlobStatus {
    /// The registry had it (a HEAD said so).
    AlreadyExists,
    /// Mounted from this repository.
    MountedFrom(String),
    /// Uploaded.
    Pushed,
}

/// Progress of a push, for the CLI's bars or log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushEvent {
    /// A blob is about to be checked.
    Preparing {
        /// The blob.
        digest: Digest,
        /// Whether it is the config (docker shows no line for it).
        config: bool,
    },
    /// Bytes of a blob sent so far.
    Progress {
        /// The blob.
        digest: Digest,
        /// Bytes sent.
        done: u64,
        /// Blob size.
        total: u64,
    },
    /// A blob is done.
    Blob {
        /// The blob.
        digest: Digest,
        /// Whether it is the config.
        config: bool,
        /// What happened.
        status: BlobStatus,
    },
    /// The manifest was uploaded (`false`: the registry already had it under the tag).
    Manifest {
        /// The manifest digest.
        digest: Digest,
        /// Whether a PUT was sent.
        pushed: bool,
    },
    /// The last event: docker's `<tag>: digest: sha256:… size: N`.
    Done {
        /// The tag (or digest) pushed.
        tag: String,
        /// The manifest digest.
        digest: Digest,
        /// The manifest size.
        size: u64,
    },
}

impl PushEvent {
    /// The line `docker push` prints for this event, if any: `<12 hex>: Layer already exists`,
    /// `Mounted from <repo>`, `Pushed`, `Pushing`, and the final digest line.
    pub fn docker_line(&self) -> Option<String> {
        match self {
            Self::Preparing {
                digest,
                config: false,
            } => Some(format!("{}: Preparing", digest.short())),
            Self::Blob {
                digest,
                config: false,
                status,
            } => Some(match status {
                BlobStatus::AlreadyExists => format!("{}: Layer already exists", digest.short()),
                BlobStatus::MountedFrom(repo) => format!("{}: Mounted from {repo}", digest.short()),
                BlobStatus::Pushed => format!("{}: Pushed", digest.short()),
            }),
            Self::Done { tag, digest, size } => {
                Some(format!("{tag}: digest: {digest} size: {size}"))
            }
            _ => None,
        }
    }
}

/// The result of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushResult {
    /// The manifest digest.
    pub digest: Digest,
    /// The manifest size.
    pub size: u64,
    /// Whether the manifest was PUT (false when the tag already pointed at it).
    pub manifest_pushed: bool,
    /// What happened to each blob (config first, then layers).
    pub blobs: Vec<(Digest, BlobStatus)>,
}

impl Client {
    /// Pushes `image` to `target`: for each blob HEAD → exists: skip; else mount from
    /// [`ImageToPush::mount_from`]; else upload from `source` (bounded parallelism). Then HEAD
    /// the manifest and PUT it only when the tag points elsewhere.
    ///
    /// The future owns what it needs (a clone of the client, which shares its auth state), so
    /// it is `Send + 'static`: `tokio::spawn(client.push_image(..))` works as it is.
    ///
    /// # Errors
    ///
    /// The first blob or manifest error, naming the registry and repository.
    pub fn push_image(
        &self,
        target: &Reference,
        image: ImageToPush,
        source: Arc<dyn BlobSource>,
        events: Events<PushEvent>,
    ) -> impl Future<Output = Result<PushResult>> + Send + 'static {
        let client = self.clone();
        let target = target.clone();
        async move { client.push_owned(&target, &image, &*source, &events).await }
    }

    async fn push_owned(
        &self,
        target: &Reference,
        image: &ImageToPush,
        source: &dyn BlobSource,
        events: &Events<PushEvent>,
    ) -> Result<PushResult> {
        // `repo:tag@digest` pushes under the tag (the digest is what we compute anyway).
        let tagged;
        let target = match target.tag() {
            Some(tag) if target.digest().is_some() => {
                tagged = target.with_tag(tag);
                &tagged
            }
            _ => target,
        };
        let mut blobs: Vec<(&BlobRef, bool)> = vec![(&image.config, true)];
        for l in &image.layers {
            if !blobs.iter().any(|(b, _)| b.digest == l.digest) {
                blobs.push((l, false));
            }
        }
        for (b, config) in &blobs {
            events.emit(PushEvent::Preparing {
                digest: b.digest.clone(),
                config: *config,
            });
        }
        // The futures are collected before they are streamed: a stream over `Map<_, closure>`
        // hits rustc's higher-ranked lifetime limitation (rust-lang/rust#102211) and the
        // future of `push_image` could not be proven `Send`.
        let uploads: Vec<_> = blobs
            .iter()
            .map(|&(b, config)| async move {
                let status = self
                    .push_blob(target, b, &image.mount_from, source, events)
                    .await?;
                events.emit(PushEvent::Blob {
                    digest: b.digest.clone(),
                    config,
                    status: status.clone(),
                });
                Ok::<_, crate::Error>((b.digest.clone(), status))
            })
            .collect();
        let statuses: Vec<(Digest, BlobStatus)> = futures::stream::iter(uploads)
            .buffered(self.options.parallel)
            .try_collect()
            .await?;

        let digest = Digest::sha256_of(&image.manifest_bytes);
        let size = image.manifest_bytes.len() as u64;
        let existing = self.head_manifest_as("push to", target).await?;
        let pushed = existing.is_none_or(|h| h.digest != digest);
        if pushed {
            self.put_manifest(target, &image.manifest_bytes, &image.manifest_media_type)
                .await?;
        }
        events.emit(PushEvent::Manifest {
            digest: digest.clone(),
            pushed,
        });
        events.emit(PushEvent::Done {
            tag: target.tag_or_digest(),
            digest: digest.clone(),
            size,
        });
        Ok(PushResult {
            digest,
            size,
            manifest_pushed: pushed,
            blobs: statuses,
        })
    }

    async fn push_blob(
        &self,
        target: &Reference,
        blob: &BlobRef,
        mount_from: &[Reference],
        source: &dyn BlobSource,
        events: &Events<PushEvent>,
    ) -> Result<BlobStatus> {
        if self
            .blob_exists_as("push to", target, &blob.digest)
            .await?
            .is_some()
        {
            return Ok(BlobStatus::AlreadyExists);
        }
        let candidates: Vec<&Reference> = mount_from
            .iter()
            .filter(|r| r.registry() == target.registry() && r.repository() != target.repository())
            .collect();
        let mut session: Option<url::Url> = None;
        for from in candidates {
            if let Some(open) = session.take() {
                // The previous candidate did not have it: drop its session, try the next.
                let _ = self.cancel_upload(target, &open).await;
            }
            match self
                .mount_blob(target, &blob.digest, from.repository())
                .await?
            {
                MountOutcome::Mounted => {
                    return Ok(BlobStatus::MountedFrom(from.repository().to_owned()));
                }
                // The registry could not mount and opened a session: the last one is uploaded
                // into (distribution spec: 202 "falls back to a regular upload").
                MountOutcome::Session(url) => session = Some(url),
            }
        }
        let progress = AtomicU64::new(0);
        let upload = self.upload_blob(target, &blob.digest, source, session, &progress);
        tokio::pin!(upload);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let emit = |done| {
            events.emit(PushEvent::Progress {
                digest: blob.digest.clone(),
                done,
                total: blob.size,
            })
        };
        loop {
            tokio::select! {
                r = &mut upload => {
                    r?;
                    emit(blob.size);
                    return Ok(BlobStatus::Pushed);
                }
                _ = tick.tick() => emit(progress.load(Ordering::Relaxed)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::blob::{BlobSink, BlobWriter};
    use crate::{ClientOptions, Error, PullEvent};

    struct NoBlobs;

    impl BlobSource for NoBlobs {
        fn open(&self, _: &Digest) -> std::io::Result<Box<dyn Read + Send>> {
            Err(std::io::ErrorKind::NotFound.into())
        }
    }

    impl BlobSink for NoBlobs {
        fn has(&self, _: &Digest) -> bool {
            false
        }
        fn write(&self, _: &Digest) -> std::io::Result<Box<dyn BlobWriter>> {
            Err(std::io::ErrorKind::Unsupported.into())
        }
    }

    /// Compile-time half: `tokio::spawn` only takes `Send + 'static` futures, so this test
    /// does not build if a push or pull future borrows from its caller again. Run-time half:
    /// the spawned futures really run (port 1 on loopback refuses) and name their target.
    #[tokio::test]
    async fn push_and_pull_futures_spawn_on_their_own_tasks() {
        let client = Client::new(ClientOptions::default().max_retries(0)).unwrap();
        let config = BlobRef {
            digest: Digest::sha256_of(b"{}"),
            size: 2,
            media_type: rbuild_oci::media_type::OCI_CONFIG.to_owned(),
        };
        let image = ImageToPush {
            manifest_bytes: b"{}".to_vec(),
            manifest_media_type: rbuild_oci::media_type::OCI_MANIFEST.to_owned(),
            config,
            layers: Vec::new(),
            mount_from: Vec::new(),
        };
        let push = {
            // Everything the call sees is dropped before the task runs.
            let target: Reference = "127.0.0.1:1/spawned/push:v1".parse().unwrap();
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let record = Arc::clone(&seen);
            let events = Events::new(move |e: PushEvent| record.lock().unwrap().push(e));
            let task = tokio::spawn(client.push_image(&target, image, Arc::new(NoBlobs), events));
            (task, seen)
        };
        let pull = {
            let reference: Reference = "127.0.0.1:1/spawned/pull:v1".parse().unwrap();
            let platform: crate::Platform = "linux/amd64".parse().unwrap();
            tokio::spawn(client.pull_image(
                &reference,
                Some(&platform),
                Arc::new(NoBlobs),
                Events::new(|_: PullEvent| {}),
            ))
        };
        drop(client);
        let err = push.0.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Http { .. }), "{err:?}");
        assert!(
            err.to_string().contains("127.0.0.1:1/spawned/push"),
            "{err}"
        );
        // The config was announced before the first request failed.
        assert!(matches!(
            push.1.lock().unwrap().first(),
            Some(PushEvent::Preparing { config: true, .. })
        ));
        let err = pull.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Http { .. }), "{err:?}");
        assert!(
            err.to_string().contains("127.0.0.1:1/spawned/pull"),
            "{err}"
        );
    }

    #[test]
    fn docker_lines() {
        let d = Digest::sha256_of(b"layer");
        let short = d.short().to_owned();
        let line = |status| {
            PushEvent::Blob {
                digest: d.clone(),
                config: false,
                status,
            }
            .docker_line()
            .unwrap()
        };
        assert_eq!(
            line(BlobStatus::AlreadyExists),
            format!("{short}: Layer already exists")
        );
        assert_eq!(
            line(BlobStatus::MountedFrom("base".into())),
            format!("{short}: Mounted from base")
        );
        assert_eq!(line(BlobStatus::Pushed), format!("{short}: Pushed"));
        let cfg = PushEvent::Blob {
            digest: d.clone(),
            config: true,
            status: BlobStatus::Pushed,
        };
        assert_eq!(cfg.docker_line(), None);
        let done = PushEvent::Done {
            tag: "v1".into(),
            digest: d.clone(),
            size: 528,
        };
        assert_eq!(
            done.docker_line().unwrap(),
            format!("v1: digest: {d} size: 528")
        );
    }
}
