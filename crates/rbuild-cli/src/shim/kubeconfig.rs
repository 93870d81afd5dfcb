//! `$KUBECONFIG` for `deploy`: a path, or (as a GitLab file-less variable often holds) the
//! kubeconfig's content, which is written to a private temporary file.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;

/// A kubeconfig to hand to the deployer; a temporary file is removed when this is dropped.
#[derive(Debug)]
pub(super) struct Kubeconfig {
    /// The file to read.
    pub path: PathBuf,
    /// Holds the temporary file written from `$KUBECONFIG`'s content, if any.
    _temp: Option<tempfile::TempPath>,
}

/// The kubeconfig that `$KUBECONFIG` names or holds; `None` when it is unset or empty.
///
/// # Errors
///
/// The temporary file for a content value cannot be written.
pub(super) fn from_env() -> anyhow::Result<Option<Kubeconfig>> {
    from_value(std::env::var_os("KUBECONFIG"))
}

/// As [`from_env`], for a given value.
///
/// # Errors
///
/// The temporary file for a content value cannot be written.
pub(super) fn from_value(value: Option<OsString>) -> anyhow::Result<Option<Kubeconfig>> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    if is_content(&text) {
        // tempfile creates the file 0600 with a random name (O_EXCL): the credentials in it
        // are readable by this user only, and no planted symlink is followed.
        let mut file = tempfile::Builder::new()
            .prefix("rbuild-kubeconfig-")
            .tempfile()
            .context("failed to write the kubeconfig of $KUBECONFIG")?;
        file.write_all(text.as_bytes())
            .context("failed to write the kubeconfig of $KUBECONFIG")?;
        let temp = file.into_temp_path();
        return Ok(Some(Kubeconfig {
            path: temp.to_path_buf(),
            _temp: Some(temp),
        }));
    }
    Ok(Some(Kubeconfig {
        path: PathBuf::from(value),
        _temp: None,
    }))
}

/// Whether a `$KUBECONFIG` value is a kubeconfig's content rather than a path list.
fn is_content(text: &str) -> bool {
    text.contains('\n') || text.trim_start().starts_with("apiVersion")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn unset_or_empty_is_none() {
        assert!(from_value(None).unwrap().is_none());
        assert!(from_value(Some(OsString::new())).unwrap().is_none());
    }

    #[test]
    fn a_path_is_used_as_is() {
        let k = from_value(Some("/etc/kube/config".into()))
            .unwrap()
            .unwrap();
        assert_eq!(k.path, PathBuf::from("/etc/kube/config"));
        assert!(k._temp.is_none());
    }

    #[test]
    fn content_goes_to_a_private_file_removed_on_drop() {
        let content = "apiVersion: v1\nkind: Config\nclusters: []\n";
        let k = from_value(Some(content.into())).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(&k.path).unwrap(), content);
        let mode = std::fs::metadata(&k.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let path = k.path.clone();
        drop(k);
        assert!(!path.exists());
        // One line starting with apiVersion is content too.
        assert!(is_content("  apiVersion: v1"));
        assert!(!is_content("/a/config:/b/config"));
    }
}
