//! Exporters: an image from the store as an OCI layout directory, an OCI archive, or a
//! docker-archive (`docker load` format).

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use rbuild_oci::{Digest, Reference, canonical_json};
use rbuild_store::Store;
use serde_json::json;

use crate::error::{Error, Result};
use crate::image::LoadedImage;

/// Output formats of `save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// An OCI image layout directory.
    OciDir,
    /// An OCI image layout in a tar file.
    OciArchive,
    /// A tar with `manifest.json` as `docker save` writes it (plus the OCI layout, as docker 25+ does).
    DockerArchive,
}

/// A `save` format name that is not one of [`SaveFormat`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format `{0}` (expected oci-dir, oci-archive or docker-archive)")]
pub struct UnknownSaveFormat(pub String);

impl std::str::FromStr for SaveFormat {
    type Err = UnknownSaveFormat;

    fn from_str(s: &str) -> std::result::Result<Self, UnknownSaveFormat> {
        match s {
            "oci-dir" => Ok(Self::OciDir),
            "oci-archive" => Ok(Self::OciArchive),
            "docker-archive" => Ok(Self::DockerArchive),
            other => Err(UnknownSaveFormat(other.to_owned())),
        }
    }
}

/// The files of an exported layout: (path inside, source) in writing order.
enum Source<'a> {
    Blob(&'a Digest),
    Bytes(Vec<u8>),
}

/// The top entry of an exported layout's `index.json`: an image manifest or an image index.
struct Top<'a> {
    digest: &'a Digest,
    media_type: &'a str,
    size: u64,
}

fn layout_files<'a>(
    top: &Top<'a>,
    images: &'a [(LoadedImage, Digest)],
    reference: Option<&Reference>,
    docker: bool,
) -> Result<Vec<(String, Source<'a>)>> {
    let mut annotations = serde_json::Map::new();
    if let Some(r) = reference {
        // `org.opencontainers.image.ref.name` holds the tag only, as docker and containerd
        // write it, so that `skopeo oci:DIR:TAG` and `umoci --image DIR:TAG` accept it; the
        // full name goes in containerd's annotation.
        annotations.insert("io.containerd.image.name".into(), json!(r.to_string()));
        annotations.insert(
            "org.opencontainers.image.ref.name".into(),
            json!(r.tag().unwrap_or("latest")),
        );
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": rbuild_oci::media_type::OCI_INDEX,
        "manifests": [{
            "mediaType": top.media_type,
            "digest": top.digest.to_string(),
            "size": top.size,
            "annotations": annotations,
        }],
    });
    let mut files = vec![
        (
            "oci-layout".to_owned(),
            Source::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        ),
        (
            "index.json".to_owned(),
            Source::Bytes(canonical_json(&index).map_err(Error::op("serialise index.json"))?),
        ),
    ];
    let mut blobs = vec![top.digest];
    for (img, config_digest) in images {
        blobs.push(&img.digest);
        blobs.push(config_digest);
        blobs.extend(img.layers.iter().map(|l| &l.digest));
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in blobs {
        if seen.insert(d) {
            files.push((format!("blobs/sha256/{}", d.hex()), Source::Blob(d)));
        }
    }
    if let ([(img, config_digest)], true) = (images, docker) {
        let manifest = json!([{
            "Config": format!("blobs/sha256/{}", config_digest.hex()),
            "RepoTags": reference.map(|r| vec![r.familiar()]).unwrap_or_default(),
            "Layers": img.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
        }]);
        files.push((
            "manifest.json".to_owned(),
            Source::Bytes(
                serde_json::to_vec(&manifest).map_err(Error::op("serialise manifest.json"))?,
            ),
        ));
    }
    Ok(files)
}

/// Writes `img` to `out` in `format`.
///
/// # Errors
///
/// an error naming the operation naming the file that could not be written.
pub fn save(
    store: &Store,
    img: &LoadedImage,
    reference: Option<&Reference>,
    format: SaveFormat,
    out: &Path,
) -> Result<()> {
    let manifest_size = store
        .read_blob(&img.digest)
        .map_err(Error::op("read the manifest"))?
        .len() as u64;
    let mt = img.manifest["mediaType"]
        .as_str()
        .unwrap_or(rbuild_oci::media_type::OCI_MANIFEST)
        .to_owned();
    let images = vec![(img.clone(), config_digest(img)?)];
    let top = Top {
        digest: &img.digest,
        media_type: &mt,
        size: manifest_size,
    };
    write_layout(store, &top, &images, reference, format, out)
}

/// Writes the image index `index` with every manifest it lists (each must be in the store) to
/// `out` as an OCI layout (`oci-dir` or `oci-archive`; a docker-archive holds no index: save
/// one platform's image with [`save`]).
///
/// # Errors
///
/// An error naming the operation when a listed manifest is missing, the format cannot hold an
/// index, or a file cannot be written.
pub fn save_index(
    store: &Store,
    index: &Digest,
    reference: Option<&Reference>,
    format: SaveFormat,
    out: &Path,
) -> Result<()> {
    if format == SaveFormat::DockerArchive {
        return Err(Error::invalid(
            format!("save {index} as a docker-archive"),
            "a docker-archive holds one image, not an index (pick one with --platform, or use oci-dir or oci-archive)",
        ));
    }
    let bytes = store
        .read_blob(index)
        .map_err(Error::op(format!("read image index {index}")))?;
    let parsed = store
        .read_index_blob(index)
        .map_err(Error::op(format!("read image index {index}")))?;
    let mut images = Vec::new();
    for m in parsed.manifests() {
        let d = Digest::try_from(m.digest()).map_err(Error::op("read an index entry"))?;
        if !store.has_blob(&d) {
            return Err(Error::invalid(
                format!("save {index}"),
                format!(
                    "the index lists manifest {d}, which is not in the store (pull each platform first)"
                ),
            ));
        }
        let img = crate::image::load(store, &d)?;
        let c = config_digest(&img)?;
        images.push((img, c));
    }
    let mt = parsed.media_type().as_ref().map_or_else(
        || rbuild_oci::media_type::OCI_INDEX.to_owned(),
        ToString::to_string,
    );
    let top = Top {
        digest: index,
        media_type: &mt,
        size: bytes.len() as u64,
    };
    write_layout(store, &top, &images, reference, format, out)
}

fn config_digest(img: &LoadedImage) -> Result<Digest> {
    img.manifest["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .map_err(Error::op("read the config digest"))
}

fn write_layout(
    store: &Store,
    top: &Top<'_>,
    images: &[(LoadedImage, Digest)],
    reference: Option<&Reference>,
    format: SaveFormat,
    out: &Path,
) -> Result<()> {
    let files = layout_files(top, images, reference, format == SaveFormat::DockerArchive)?;
    let op = || format!("write {}", out.display());
    match format {
        SaveFormat::OciDir => {
            fs::create_dir_all(out.join("blobs/sha256")).map_err(Error::op(op()))?;
            for (name, src) in files {
                let dest = out.join(&name);
                match src {
                    Source::Bytes(b) => fs::write(&dest, b).map_err(Error::op(op()))?,
                    Source::Blob(d) => {
                        if dest.exists() {
                            continue;
                        }
                        // Same filesystem: a hard link costs nothing; else copy.
                        if fs::hard_link(store.blob_path(d), &dest).is_err() {
                            fs::copy(store.blob_path(d), &dest).map_err(Error::op(op()))?;
                        }
                    }
                }
            }
        }
        SaveFormat::OciArchive | SaveFormat::DockerArchive => {
            let tmp = out.with_extension("partial");
            let f = fs::File::create(&tmp).map_err(Error::op(op()))?;
            let mut tar = tar::Builder::new(io::BufWriter::new(f));
            let mut written = std::collections::BTreeSet::new();
            for (name, src) in files {
                if !written.insert(name.clone()) {
                    continue;
                }
                let mut h = tar::Header::new_ustar();
                h.set_mode(0o644);
                h.set_mtime(0);
                match src {
                    Source::Bytes(b) => {
                        h.set_size(b.len() as u64);
                        h.set_cksum();
                        tar.append_data(&mut h, &name, b.as_slice())
                            .map_err(Error::op(op()))?;
                    }
                    Source::Blob(d) => {
                        let f = store.open_blob(d).map_err(Error::op(op()))?;
                        let len = f.metadata().map_err(Error::op(op()))?.len();
                        h.set_size(len);
                        h.set_cksum();
                        tar.append_data(&mut h, &name, f).map_err(Error::op(op()))?;
                    }
                }
            }
            let mut w = tar.into_inner().map_err(Error::op(op()))?;
            w.flush().map_err(Error::op(op()))?;
            drop(w);
            fs::rename(&tmp, out).map_err(Error::op(op()))?;
        }
    }
    Ok(())
}
