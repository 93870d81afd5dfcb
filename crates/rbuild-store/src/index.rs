//! Tags: `index.json` (image-spec `image-layout.md`, "index.json file") with one manifest
//! descriptor per tag, named by the `org.opencontainers.image.ref.name` annotation.
//!
//! The annotation holds the full normalised reference (`docker.io/library/busybox:latest`), as
//! `skopeo copy docker://busybox oci:DIR:docker.io/library/busybox:latest` would write it. Both
//! skopeo 1.9.3 (`oci:DIR:NAME`) and umoci 0.4.7 (`--image DIR:NAME`) look names up verbatim
//! and accept `/` and `:` in them, but both reject names outside the spec grammar (see
//! [`is_oci_ref_name`]); docker allows some tags that grammar does not (`v1-`, `_x`, `a..b`) and
//! IPv6 registries (`[::1]:5000`). Such tags are still stored and resolved here; an exporter
//! that hands the layout to other tools must rename them.

use std::fs;

use rbuild_oci::oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType,
};
use rbuild_oci::{Digest, Reference, canonical_json, media_type};

use crate::{Error, Result, Store, atomic};

/// The annotation naming a tag in `index.json` (image-spec `annotations.md`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Whether `name` matches the grammar of `org.opencontainers.image.ref.name`
/// (image-spec `annotations.md`, "Pre-Defined Annotation Keys"):
///
/// ```text
/// ref       ::= component ("/" component)*
/// component ::= alphanum (separator alphanum)*
/// alphanum  ::= [A-Za-z0-9]+
/// separator ::= [-._:@+] | "--"
/// ```
///
/// skopeo 1.9.3 and umoci 0.4.7 both refuse names outside it ("tag contains invalid characters").
pub fn is_oci_ref_name(name: &str) -> bool {
    !name.is_empty() && name.split('/').all(is_ref_component)
}

fn is_ref_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        // alphanum
        let start = i;
        while i < b.len() && b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // separator
        if b[i..].starts_with(b"--") {
            i += 2;
        } else if matches!(b[i], b'-' | b'.' | b'_' | b':' | b'@' | b'+') {
            i += 1;
        } else {
            return false;
        }
    }
}

/// The name a reference is tagged under: the full normalised reference without digest.
fn ref_name(r: &Reference) -> Option<String> {
    r.tag().map(|t| r.with_tag(t).to_string())
}

fn annotation_of(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME_ANNOTATION))
        .map(String::as_str)
}

impl Store {
    pub(crate) fn read_index(&self) -> Result<ImageIndex> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(|source| Error::ReadIndex {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| Error::ParseIndex { path, source })
    }

    fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let bytes = canonical_json(index).map_err(|source| Error::Serialize {
            what: "index.json",
            source,
        })?;
        let path = self.index_path();
        atomic::write_atomic(&self.tmp_dir(), &path, &bytes)
            .map_err(|source| Error::WriteFile { path, source })
    }

    /// Tags `manifest` (a manifest or index descriptor: media type, digest, size) as `r`,
    /// replacing what `r` named before. `index.json` is rewritten by temp file + rename while
    /// holding `index.lock`, so concurrent taggers (threads or processes) lose no tag. A digest
    /// in `r` is ignored: the name is `registry/repository:tag`.
    ///
    /// # Errors
    ///
    /// [`Error::TagWithoutTag`] when `r` only has a digest, [`Error::TagMissingManifest`] when
    /// the descriptor's blob is not in the store; errors reading, parsing or writing
    /// `index.json`.
    pub fn tag(&self, r: &Reference, manifest: Descriptor) -> Result<()> {
        let name = ref_name(r).ok_or_else(|| Error::TagWithoutTag {
            reference: r.clone(),
        })?;
        let present = Digest::try_from(manifest.digest()).is_ok_and(|d| self.has_blob(&d));
        if !present {
            return Err(Error::TagMissingManifest {
                reference: r.clone(),
                digest: manifest.digest().to_string(),
            });
        }
        let mut desc = manifest;
        let mut annotations = desc.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME_ANNOTATION.to_owned(), name.clone());
        desc.set_annotations(Some(annotations));

        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        let mut manifests = index.manifests().clone();
        match manifests
            .iter_mut()
            .find(|d| annotation_of(d) == Some(name.as_str()))
        {
            Some(slot) => *slot = desc,
            None => manifests.push(desc),
        }
        index.set_manifests(manifests);
        // Reading tools expect the (optional) media type on a v1.1 index; set it if a foreign
        // layout omitted it.
        if index.media_type().is_none() {
            index.set_media_type(Some(MediaType::ImageIndex));
        }
        self.write_index(&index)
    }

    /// Removes the tag `r`; returns whether it existed. Blobs stay until [`Store::prune`].
    ///
    /// # Errors
    ///
    /// Errors reading, parsing or writing `index.json`.
    pub fn untag(&self, r: &Reference) -> Result<bool> {
        let Some(name) = ref_name(r) else {
            return Ok(false);
        };
        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        let mut manifests = index.manifests().clone();
        let before = manifests.len();
        manifests.retain(|d| annotation_of(d) != Some(name.as_str()));
        if manifests.len() == before {
            return Ok(false);
        }
        index.set_manifests(manifests);
        self.write_index(&index)?;
        Ok(true)
    }

    /// Finds the manifest `r` names. A reference with a digest resolves to that blob if the
    /// store has it (its media type read from the blob), whatever the tag says, as docker
    /// treats `name:tag@digest`; otherwise the tag is looked up in `index.json`.
    ///
    /// # Errors
    ///
    /// Errors reading or parsing `index.json` or the pinned manifest blob.
    pub fn resolve(&self, r: &Reference) -> Result<Option<Descriptor>> {
        if let Some(d) = r.digest() {
            if !self.has_blob(d) {
                return Ok(None);
            }
            let bytes = self.read_blob(d)?;
            let value: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|source| Error::ParseBlob {
                    what: "manifest",
                    digest: d.clone(),
                    source,
                })?;
            let mt = match value.get("mediaType").and_then(|m| m.as_str()) {
                Some(mt) => mt.to_owned(),
                // mediaType is optional in both documents; `manifests` only exists in an index.
                None if value.get("manifests").is_some() => media_type::OCI_INDEX.to_owned(),
                None => media_type::OCI_MANIFEST.to_owned(),
            };
            return Ok(Some(Descriptor::new(
                MediaType::from(mt.as_str()),
                bytes.len() as u64,
                d,
            )));
        }
        let Some(name) = ref_name(r) else {
            return Ok(None);
        };
        let index = self.read_index()?;
        Ok(index
            .manifests()
            .iter()
            .find(|d| annotation_of(d) == Some(name.as_str()))
            .cloned())
    }

    /// All tagged images, in `index.json` order. Entries whose name is not a normalised
    /// reference (e.g. a bare `latest` written by another tool) are skipped: they cannot be
    /// addressed through a [`Reference`].
    ///
    /// # Errors
    ///
    /// Errors reading or parsing `index.json`.
    pub fn images(&self) -> Result<Vec<(Reference, Descriptor)>> {
        let index = self.read_index()?;
        Ok(index
            .manifests()
            .iter()
            .filter_map(|d| {
                let name = annotation_of(d)?;
                let r: Reference = name.parse().ok()?;
                (r.to_string() == name).then(|| (r, d.clone()))
            })
            .collect())
    }

    /// Reads and parses the image manifest blob `d`.
    ///
    /// # Errors
    ///
    /// [`Error::ReadBlob`] / [`Error::CorruptBlob`] as [`Store::read_blob`];
    /// [`Error::ParseBlob`] when it is not an image manifest.
    pub fn read_manifest(&self, d: &Digest) -> Result<ImageManifest> {
        self.read_json(d, "manifest")
    }

    /// Reads and parses the image index blob `d`.
    ///
    /// # Errors
    ///
    /// As [`Store::read_manifest`].
    pub fn read_index_blob(&self, d: &Digest) -> Result<ImageIndex> {
        self.read_json(d, "index")
    }

    /// Reads and parses the image configuration blob `d`.
    ///
    /// # Errors
    ///
    /// As [`Store::read_manifest`].
    pub fn read_config(&self, d: &Digest) -> Result<ImageConfiguration> {
        self.read_json(d, "config")
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        d: &Digest,
        what: &'static str,
    ) -> Result<T> {
        let bytes = self.read_blob(d)?;
        serde_json::from_slice(&bytes).map_err(|source| Error::ParseBlob {
            what,
            digest: d.clone(),
            source,
        })
    }
}

/// The tag names of `index`, in order.
#[cfg(test)]
fn ref_names(index: &ImageIndex) -> Vec<String> {
    index
        .manifests()
        .iter()
        .filter_map(annotation_of)
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn desc(store: &Store, body: &str) -> Descriptor {
        let d = store.put_blob(body.as_bytes()).unwrap();
        Descriptor::new(MediaType::ImageManifest, body.len() as u64, &d)
    }

    #[test]
    fn ref_name_grammar_matches_skopeo_and_umoci() {
        // Accepted by both tools (checked by hand against skopeo 1.9.3 and umoci 0.4.7).
        for ok in [
            "docker.io/library/busybox:latest",
            "127.0.0.1:5000/a/b:v1",
            "latest",
            "busybox:latest",
            "a--b",
        ] {
            assert!(is_oci_ref_name(ok), "{ok}");
        }
        // Rejected by both tools with "invalid characters".
        for bad in [
            "docker.io/library/busybox:v1-",
            "docker.io/library/busybox:_a",
            "docker.io/library/busybox:a__b",
            "docker.io/library/busybox:a..b",
            "[::1]:5000/x:1",
            "",
            "a//b",
            "a/",
        ] {
            assert!(!is_oci_ref_name(bad), "{bad}");
        }
    }

    #[test]
    fn tag_resolve_retag_untag() {
        let (_d, store) = store();
        let r: Reference = "busybox".parse().unwrap();
        assert_eq!(store.resolve(&r).unwrap(), None);
        let one = desc(&store, r#"{"schemaVersion":2,"n":1}"#);
        store.tag(&r, one.clone()).unwrap();
        let got = store.resolve(&r).unwrap().unwrap();
        assert_eq!(got.digest(), one.digest());
        assert_eq!(
            annotation_of(&got),
            Some("docker.io/library/busybox:latest")
        );

        // Retagging replaces, does not duplicate.
        let two = desc(&store, r#"{"schemaVersion":2,"n":2}"#);
        store.tag(&r, two.clone()).unwrap();
        assert_eq!(store.resolve(&r).unwrap().unwrap().digest(), two.digest());
        assert_eq!(store.read_index().unwrap().manifests().len(), 1);

        let other: Reference = "localhost:5000/app:1".parse().unwrap();
        store.tag(&other, one.clone()).unwrap();
        let images = store.images().unwrap();
        assert_eq!(images.len(), 2);
        assert_eq!(images[1].0, other);

        assert!(store.untag(&r).unwrap());
        assert!(!store.untag(&r).unwrap());
        assert_eq!(store.resolve(&r).unwrap(), None);
        assert_eq!(store.images().unwrap().len(), 1);
    }

    #[test]
    fn resolve_by_digest_reads_the_blob() {
        let (_d, store) = store();
        let body = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let d = store.put_blob(body.as_bytes()).unwrap();
        let r: Reference = format!("app:whatever@{d}").parse().unwrap();
        let got = store.resolve(&r).unwrap().unwrap();
        assert_eq!(got.media_type(), &MediaType::ImageIndex);
        assert_eq!(got.size(), body.len() as u64);
        let missing: Reference = format!("app@{}", Digest::sha256_of(b"x")).parse().unwrap();
        assert_eq!(store.resolve(&missing).unwrap(), None);
    }

    #[test]
    fn tag_by_digest_only_is_refused() {
        let (_d, store) = store();
        let one = desc(&store, "{}");
        let r: Reference = format!("app@{}", Digest::sha256_of(b"x")).parse().unwrap();
        assert!(matches!(
            store.tag(&r, one),
            Err(Error::TagWithoutTag { .. })
        ));
    }

    #[test]
    fn tag_of_a_missing_manifest_is_refused() {
        let (_d, store) = store();
        let r: Reference = "app".parse().unwrap();
        let absent = Digest::sha256_of(b"never written");
        let err = store
            .tag(&r, Descriptor::new(MediaType::ImageManifest, 13, &absent))
            .unwrap_err();
        assert!(matches!(err, Error::TagMissingManifest { .. }), "{err:?}");
        assert_eq!(store.images().unwrap().len(), 0);
    }

    #[test]
    fn images_skips_foreign_names() {
        let (_d, store) = store();
        let one = desc(&store, "{}");
        let r: Reference = "busybox".parse().unwrap();
        store.tag(&r, one.clone()).unwrap();
        // A name another tool wrote: not a normalised reference.
        let mut index = store.read_index().unwrap();
        let mut foreign = one;
        foreign.set_annotations(Some(HashMap::from([(
            REF_NAME_ANNOTATION.to_owned(),
            "latest".to_owned(),
        )])));
        let mut manifests = index.manifests().clone();
        manifests.push(foreign);
        index.set_manifests(manifests);
        store.write_index(&index).unwrap();
        assert_eq!(ref_names(&store.read_index().unwrap()).len(), 2);
        assert_eq!(store.images().unwrap().len(), 1);
    }

    #[test]
    fn concurrent_taggers_lose_no_tag() {
        let (_d, store) = store();
        let one = desc(&store, "{}");
        std::thread::scope(|s| {
            for t in 0..4 {
                let store = &store;
                let one = one.clone();
                s.spawn(move || {
                    for i in 0..25 {
                        let r: Reference = format!("app{t}:v{i}").parse().unwrap();
                        store.tag(&r, one.clone()).unwrap();
                    }
                });
            }
        });
        assert_eq!(store.images().unwrap().len(), 100);
    }
}
