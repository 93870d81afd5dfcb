//! The one walk over the image-spec descriptor graph that [`Store::prune`] (marking what is
//! reachable) and [`Store::check`] (verifying what is reachable) share.
//!
//! The walk knows the shape of the graph (image-spec `image-index.md` and `manifest.md`): an
//! index reaches its manifests, a manifest its layers and its config. What happens at each
//! descriptor (marking, verifying, whether to go further) is the [`Visitor`]'s.
//!
//! Children of an index that are not in the store are skipped: a single-platform pull keeps
//! one manifest of a multi-platform index, and the others are neither reachable content nor
//! damage.

use std::fmt;

use rbuild_oci::oci_spec::image::{Descriptor, ImageManifest};
use rbuild_oci::{Digest, Reference, media_type};

use crate::{Error, Result, Store};

/// How the walk reached a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edge<'a> {
    /// An entry of `index.json`, with its tag when it has one.
    Root {
        /// The entry's tag.
        tag: Option<&'a Reference>,
    },
    /// A manifest (or nested index) listed by an index.
    Child {
        /// The index.
        index: &'a Digest,
    },
    /// A layer of a manifest.
    Layer {
        /// The manifest.
        manifest: &'a Digest,
    },
    /// The config of a manifest.
    Config {
        /// The manifest.
        manifest: &'a Digest,
    },
}

/// Who refers to the descriptor, as problems name it: `tag x`, `index sha256:…`,
/// `manifest sha256:…`.
impl fmt::Display for Edge<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Edge::Root { tag: Some(tag) } => write!(f, "tag {tag}"),
            Edge::Root { tag: None } => f.write_str("index.json"),
            Edge::Child { index } => write!(f, "index {index}"),
            Edge::Layer { manifest } | Edge::Config { manifest } => {
                write!(f, "manifest {manifest}")
            }
        }
    }
}

/// What happens at each node of the walk. An `Err` from any method stops the walk and is
/// returned by [`walk`].
pub(crate) trait Visitor {
    /// `desc` was reached through `edge`. Returns the blob's digest when the walk may read the
    /// blob (descend into an index or manifest, hand a config to [`Visitor::image_config`]),
    /// `None` to stop at this descriptor.
    fn reach(&mut self, desc: &Descriptor, edge: Edge<'_>) -> Result<Option<Digest>>;

    /// An index or manifest blob (`what`) could not be read or parsed.
    fn unreadable(&mut self, digest: Digest, what: &'static str, error: Error) -> Result<()>;

    /// The image config of `manifest` (an OCI or Docker config media type; artifacts'
    /// configs, such as the empty `{}`, are not image configs), with the digests
    /// [`Visitor::reach`] returned for its layers, in manifest order.
    fn image_config(
        &mut self,
        manifest: &Digest,
        config: Digest,
        layers: &[Option<Digest>],
    ) -> Result<()>;
}

/// Walks the graph below `desc`, reached through `edge`.
///
/// # Errors
///
/// The first error a visitor method returns.
pub(crate) fn walk(
    store: &Store,
    desc: &Descriptor,
    edge: Edge<'_>,
    visitor: &mut dyn Visitor,
) -> Result<()> {
    let Some(digest) = visitor.reach(desc, edge)? else {
        return Ok(());
    };
    let mt = desc.media_type().as_ref();
    if media_type::is_index(mt) {
        match store.read_index_blob(&digest) {
            Ok(index) => {
                for child in index.manifests() {
                    let present =
                        Digest::try_from(child.digest()).is_ok_and(|d| store.has_blob(&d));
                    if present {
                        walk(store, child, Edge::Child { index: &digest }, visitor)?;
                    }
                }
                Ok(())
            }
            Err(e) => visitor.unreadable(digest, "index", e),
        }
    } else if media_type::is_manifest(mt) {
        match store.read_manifest(&digest) {
            Ok(manifest) => walk_manifest(&digest, &manifest, visitor),
            Err(e) => visitor.unreadable(digest, "manifest", e),
        }
    } else {
        Ok(())
    }
}

fn walk_manifest(
    digest: &Digest,
    manifest: &ImageManifest,
    visitor: &mut dyn Visitor,
) -> Result<()> {
    let layers = manifest
        .layers()
        .iter()
        .map(|l| visitor.reach(l, Edge::Layer { manifest: digest }))
        .collect::<Result<Vec<_>>>()?;
    let Some(config) = visitor.reach(manifest.config(), Edge::Config { manifest: digest })? else {
        return Ok(());
    };
    let config_mt = manifest.config().media_type().as_ref();
    if config_mt == media_type::OCI_CONFIG || config_mt == media_type::DOCKER_CONFIG {
        visitor.image_config(digest, config, &layers)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rbuild_oci::canonical_json;
    use rbuild_oci::oci_spec::image::MediaType;
    use serde_json::json;

    use super::*;

    /// Records every call; stops at digests listed in `stop`.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        stop: Vec<Digest>,
        fail_unreadable: bool,
    }

    impl Visitor for Recorder {
        fn reach(&mut self, desc: &Descriptor, edge: Edge<'_>) -> Result<Option<Digest>> {
            let d = Digest::try_from(desc.digest()).ok();
            let name = d
                .as_ref()
                .map_or("invalid".to_owned(), |d| d.short().to_owned());
            self.calls.push(format!("reach {name} from {edge}"));
            Ok(d.filter(|d| !self.stop.contains(d)))
        }

        fn unreadable(&mut self, digest: Digest, what: &'static str, error: Error) -> Result<()> {
            self.calls
                .push(format!("unreadable {what} {}", digest.short()));
            if self.fail_unreadable {
                return Err(error);
            }
            Ok(())
        }

        fn image_config(
            &mut self,
            manifest: &Digest,
            config: Digest,
            layers: &[Option<Digest>],
        ) -> Result<()> {
            self.calls.push(format!(
                "config {} of {} with {} layers",
                config.short(),
                manifest.short(),
                layers.iter().flatten().count()
            ));
            Ok(())
        }
    }

    fn put(store: &Store, v: &serde_json::Value) -> (Digest, u64) {
        let bytes = canonical_json(v).unwrap();
        (store.put_blob(&bytes).unwrap(), bytes.len() as u64)
    }

    /// index → (manifest → config + 2 layers, absent manifest); returns (store, index desc,
    /// manifest, config, layers).
    fn graph() -> (
        tempfile::TempDir,
        Store,
        Descriptor,
        Digest,
        Digest,
        [Digest; 2],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let l1 = store.put_blob(b"layer one").unwrap();
        let l2 = store.put_blob(b"layer two").unwrap();
        let (config, config_size) = put(&store, &json!({"rootfs": {"diff_ids": []}}));
        let (manifest, manifest_size) = put(
            &store,
            &json!({
                "schemaVersion": 2,
                "mediaType": media_type::OCI_MANIFEST,
                "config": {"mediaType": media_type::OCI_CONFIG, "digest": config.to_string(), "size": config_size},
                "layers": [
                    {"mediaType": media_type::OCI_LAYER_GZIP, "digest": l1.to_string(), "size": 9},
                    {"mediaType": media_type::OCI_LAYER_GZIP, "digest": l2.to_string(), "size": 9},
                ],
            }),
        );
        let absent = Digest::sha256_of(b"the arm64 manifest, never pulled");
        let (index, index_size) = put(
            &store,
            &json!({
                "schemaVersion": 2,
                "mediaType": media_type::OCI_INDEX,
                "manifests": [
                    {"mediaType": media_type::OCI_MANIFEST, "digest": manifest.to_string(), "size": manifest_size},
                    {"mediaType": media_type::OCI_MANIFEST, "digest": absent.to_string(), "size": 10},
                ],
            }),
        );
        let desc = Descriptor::new(MediaType::ImageIndex, index_size, &index);
        (dir, store, desc, manifest, config, [l1, l2])
    }

    #[test]
    fn walks_index_manifest_layers_then_config_and_skips_absent_children() {
        let (_dir, store, desc, manifest, config, [l1, l2]) = graph();
        let index = Digest::try_from(desc.digest()).unwrap();
        let tag: Reference = "localhost/app:1".parse().unwrap();
        let mut v = Recorder::default();
        walk(&store, &desc, Edge::Root { tag: Some(&tag) }, &mut v).unwrap();
        assert_eq!(
            v.calls,
            [
                format!("reach {} from tag localhost/app:1", index.short()),
                format!("reach {} from index {index}", manifest.short()),
                format!("reach {} from manifest {manifest}", l1.short()),
                format!("reach {} from manifest {manifest}", l2.short()),
                format!("reach {} from manifest {manifest}", config.short()),
                format!(
                    "config {} of {} with 2 layers",
                    config.short(),
                    manifest.short()
                ),
            ]
        );
    }

    #[test]
    fn a_visitor_stops_the_descent() {
        let (_dir, store, desc, manifest, config, [l1, _]) = graph();
        let index = Digest::try_from(desc.digest()).unwrap();
        // Stopping at the index: nothing below it is reached.
        let mut v = Recorder {
            stop: vec![index.clone()],
            ..Recorder::default()
        };
        walk(&store, &desc, Edge::Root { tag: None }, &mut v).unwrap();
        assert_eq!(
            v.calls,
            [format!("reach {} from index.json", index.short())]
        );
        // Stopping at a layer: the config still comes, with one layer usable.
        let mut v = Recorder {
            stop: vec![l1],
            ..Recorder::default()
        };
        walk(&store, &desc, Edge::Root { tag: None }, &mut v).unwrap();
        assert_eq!(
            v.calls.last().unwrap(),
            &format!(
                "config {} of {} with 1 layers",
                config.short(),
                manifest.short()
            )
        );
        // Stopping at the config: no image_config call.
        let mut v = Recorder {
            stop: vec![config],
            ..Recorder::default()
        };
        walk(&store, &desc, Edge::Root { tag: None }, &mut v).unwrap();
        assert!(
            v.calls.iter().all(|c| !c.starts_with("config")),
            "{:?}",
            v.calls
        );
    }

    #[test]
    fn artifact_configs_are_not_image_configs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let empty = store.put_blob(b"{}").unwrap();
        let (manifest, size) = put(
            &store,
            &json!({
                "schemaVersion": 2,
                "mediaType": media_type::OCI_MANIFEST,
                "artifactType": "application/spdx+json",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
                "layers": [],
            }),
        );
        let desc = Descriptor::new(MediaType::ImageManifest, size, &manifest);
        let mut v = Recorder::default();
        walk(&store, &desc, Edge::Root { tag: None }, &mut v).unwrap();
        assert_eq!(v.calls.len(), 2, "{:?}", v.calls);
        assert!(v.calls[1].starts_with(&format!("reach {}", empty.short())));
    }

    #[test]
    fn unreadable_manifests_go_to_the_visitor_which_may_stop_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let bogus = store.put_blob(b"not a manifest").unwrap();
        let desc = Descriptor::new(MediaType::ImageManifest, 14, &bogus);
        let mut v = Recorder::default();
        walk(&store, &desc, Edge::Root { tag: None }, &mut v).unwrap();
        assert_eq!(
            v.calls.last().unwrap(),
            &format!("unreadable manifest {}", bogus.short())
        );
        let mut v = Recorder {
            fail_unreadable: true,
            ..Recorder::default()
        };
        let err = walk(&store, &desc, Edge::Root { tag: None }, &mut v).unwrap_err();
        assert!(
            matches!(err, Error::ParseBlob { what: "manifest", ref digest, .. } if *digest == bogus),
            "{err:?}"
        );
    }
}
