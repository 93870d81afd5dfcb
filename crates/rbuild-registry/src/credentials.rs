//! Registry credentials from docker's config files and credential helpers.
//!
//! Lookup order, as podman/skopeo do it: `$REGISTRY_AUTH_FILE` (same `auths` format) first,
//! then docker's `config.json` (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`).
//! Within a docker config: `credHelpers[host]`, then `auths[host]`, then `credsStore`
//! (docker `cli/config/configfile/file.go` `GetCredentialsStore`). Docker Hub's key is
//! `https://index.docker.io/v1/`. Helpers are run as `docker-credential-<name> get` with the
//! server on stdin (docker-credential-helpers protocol).
//!
//! Secrets never appear in `Debug` output or error messages.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Docker Hub's key in `config.json`.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A username and a secret (password or token).
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Basic auth / token endpoint credentials.
    Password {
        /// The username.
        username: String,
        /// The password.
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in config.json, `<token>` user from helpers).
    IdentityToken(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Self::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

impl Credentials {
    /// Username and password.
    pub fn password(username: &str, password: &str) -> Self {
        Self::Password {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }
}

/// Why credentials could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A config file could not be read or written.
    #[error("accessing {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A config file is not valid JSON of the expected shape.
    #[error("parsing {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An `auth` entry is not base64 of `user:password`.
    #[error("invalid `auth` entry for {key} in {path}")]
    BadAuthEntry {
        /// The file.
        path: PathBuf,
        /// The `auths` key.
        key: String,
    },
    /// A credential helper failed.
    #[error("credential helper docker-credential-{helper} failed: {reason}")]
    Helper {
        /// The helper name.
        helper: String,
        /// Its stderr or exit status (never its stdout, which may hold secrets).
        reason: String,
    },
    /// The lookup task was cancelled or panicked.
    #[error("credential lookup interrupted: {0}")]
    Interrupted(String),
    /// No home directory to find `~/.docker/config.json` in.
    #[error("no home directory and no DOCKER_CONFIG: cannot locate config.json")]
    NoConfigDir,
}

/// Where to look for credentials: injectable so that tests do not read the real home.
#[derive(Debug, Clone, Default)]
pub struct CredentialsEnv {
    /// `$DOCKER_CONFIG`: a directory holding `config.json`.
    pub docker_config: Option<PathBuf>,
    /// `$REGISTRY_AUTH_FILE`: a podman-style `auth.json`.
    pub registry_auth_file: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// Directory to find `docker-credential-*` in; `None` uses `$PATH`.
    pub helper_dir: Option<PathBuf>,
}

impl CredentialsEnv {
    /// Reads `DOCKER_CONFIG`, `REGISTRY_AUTH_FILE` and `HOME` from the process environment.
    pub fn from_process_env() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            docker_config: var("DOCKER_CONFIG"),
            registry_auth_file: var("REGISTRY_AUTH_FILE"),
            home: var("HOME"),
            helper_dir: None,
        }
    }

    /// The docker `config.json` path login writes to.
    ///
    /// # Errors
    ///
    /// [`CredentialsError::NoConfigDir`] without `DOCKER_CONFIG` and `HOME`.
    pub fn docker_config_path(&self) -> Result<PathBuf, CredentialsError> {
        match (&self.docker_config, &self.home) {
            (Some(d), _) => Ok(d.join("config.json")),
            (None, Some(h)) => Ok(h.join(".docker").join("config.json")),
            (None, None) => Err(CredentialsError::NoConfigDir),
        }
    }

    /// Finds credentials for `registry` (`host[:port]`); `Ok(None)` means anonymous.
    ///
    /// # Errors
    ///
    /// A config file that exists but cannot be read or parsed, a bad `auth` entry, or a
    /// failing credential helper.
    pub fn resolve(&self, registry: &str) -> Result<Option<Credentials>, CredentialsError> {
        if let Some(path) = &self.registry_auth_file
            && let Some(cfg) = read_config(path)?
            && let Some(c) = from_auths(&cfg, path, registry)?
        {
            return Ok(Some(c));
        }
        let Ok(path) = self.docker_config_path() else {
            return Ok(None);
        };
        let Some(cfg) = read_config(&path)? else {
            return Ok(None);
        };
        if let Some(helper) = cfg.cred_helpers.get(registry) {
            return self.run_helper(helper, &server_key(registry));
        }
        if let Some(c) = from_auths(&cfg, &path, registry)? {
            return Ok(Some(c));
        }
        if let Some(store) = &cfg.creds_store {
            return self.run_helper(store, &server_key(registry));
        }
        Ok(None)
    }

    /// Stores `username`/`password` for `registry` in `config.json` (mode 0600), as
    /// `docker login` does without a credential store; other keys of the file are kept.
    ///
    /// # Errors
    ///
    /// The file cannot be read, parsed or written.
    pub fn store(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<PathBuf, CredentialsError> {
        let path = self.docker_config_path()?;
        let mut doc = read_raw(&path)?;
        let auth = STANDARD.encode(format!("{username}:{password}"));
        let obj = doc
            .as_object_mut()
            .ok_or_else(|| parse_error(&path, "config.json is not an object"))?;
        let auths = obj
            .entry("auths")
            .or_insert_with(|| serde_json::json!({}))
            .as_object_mut()
            .ok_or_else(|| parse_error(&path, "`auths` is not an object"))?;
        auths.insert(server_key(registry), serde_json::json!({ "auth": auth }));
        write_private(&path, &doc)?;
        Ok(path)
    }

    /// Removes `registry` from `auths` in `config.json`. Returns whether there was an entry.
    ///
    /// # Errors
    ///
    /// The file cannot be read, parsed or written.
    pub fn erase(&self, registry: &str) -> Result<bool, CredentialsError> {
        let path = self.docker_config_path()?;
        if !path.exists() {
            return Ok(false);
        }
        let mut doc = read_raw(&path)?;
        let removed = doc
            .get_mut("auths")
            .and_then(|a| a.as_object_mut())
            .is_some_and(|a| {
                let keys: Vec<String> = a
                    .keys()
                    .filter(|k| normalize_key(k) == registry)
                    .cloned()
                    .collect();
                keys.iter().filter(|k| a.remove(*k).is_some()).count() > 0
            });
        if removed {
            write_private(&path, &doc)?;
        }
        Ok(removed)
    }

    fn run_helper(
        &self,
        helper: &str,
        server: &str,
    ) -> Result<Option<Credentials>, CredentialsError> {
        let name = format!("docker-credential-{helper}");
        let program = match &self.helper_dir {
            Some(d) => d.join(&name),
            None => PathBuf::from(&name),
        };
        let fail = |reason: String| CredentialsError::Helper {
            helper: helper.to_owned(),
            reason,
        };
        let mut child = Command::new(&program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run {name}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading (e.g. "not found") closes the pipe: its
            // exit status and output tell what happened, not this write.
            match stdin.write_all(server.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(fail(format!("writing to {name}: {e}")));
                }
                _ => {}
            }
        }
        let out = child
            .wait_with_output()
            .map_err(|e| fail(format!("waiting for {name}: {e}")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let msg = String::from_utf8_lossy(&out.stdout);
            // The helpers print "credentials not found in native keychain" on stdout for a
            // missing entry (docker-credential-helpers `credentials.ErrCredentialsNotFound`).
            if msg.contains("credentials not found") {
                return Ok(None);
            }
            return Err(fail(format!("{} {}", out.status, stderr.trim())));
        }
        #[derive(serde::Deserialize)]
        struct HelperOut {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let parsed: HelperOut = serde_json::from_slice(&out.stdout)
            .map_err(|_| fail("output is not the expected JSON".to_owned()))?;
        if parsed.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(if parsed.username == "<token>" {
            Credentials::IdentityToken(parsed.secret)
        } else {
            Credentials::Password {
                username: parsed.username,
                password: parsed.secret,
            }
        }))
    }
}

#[derive(serde::Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

fn read_config(path: &Path) -> Result<Option<ConfigFile>, CredentialsError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| CredentialsError::Parse {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CredentialsError::File {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_raw(path: &Path) -> Result<serde_json::Value, CredentialsError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| CredentialsError::Parse {
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(source) => Err(CredentialsError::File {
            path: path.to_owned(),
            source,
        }),
    }
}

fn parse_error(path: &Path, what: &str) -> CredentialsError {
    CredentialsError::Parse {
        path: path.to_owned(),
        source: serde::de::Error::custom(what),
    }
}

/// Writes `doc` to a 0600 temp file next to `path`, then renames it over `path`.
///
/// The temp file has a random name and is created with `O_CREAT | O_EXCL` (tempfile's
/// `Builder`), mode 0600 from the start: a fixed name such as `config.json.tmp` opened with
/// `O_TRUNC` would follow a symlink planted there by anyone who can write the directory (a
/// job sharing the home directory) and write the credentials into its target, then rename the
/// link itself over `config.json`. `O_EXCL` never follows a symlink at the final component
/// (POSIX `open`).
fn write_private(path: &Path, doc: &serde_json::Value) -> Result<(), CredentialsError> {
    use std::os::unix::fs::PermissionsExt as _;
    let io = |source| CredentialsError::File {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let bytes = serde_json::to_vec_pretty(doc).map_err(|e| io(std::io::Error::other(e)))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(&bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// The key docker uses for `registry` in `auths` and with helpers.
fn server_key(registry: &str) -> String {
    if registry == "docker.io" {
        DOCKER_HUB_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/v2/` → `host:5000`
/// (docker `registry.ConvertToHostname`).
fn normalize_key(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    if k == "index.docker.io" || k == "registry-1.docker.io" {
        "docker.io"
    } else {
        k
    }
}

fn from_auths(
    cfg: &ConfigFile,
    path: &Path,
    registry: &str,
) -> Result<Option<Credentials>, CredentialsError> {
    let Some((key, entry)) = cfg.auths.iter().find(|(k, _)| normalize_key(k) == registry) else {
        return Ok(None);
    };
    if let Some(token) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials::IdentityToken(token.clone())));
    }
    if let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
        let bad = || CredentialsError::BadAuthEntry {
            path: path.to_owned(),
            key: key.clone(),
        };
        let decoded = STANDARD.decode(auth.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (u, p) = text.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials::password(u, p)));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Ok(Some(Credentials::password(u, p))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(dir: &Path) -> CredentialsEnv {
        CredentialsEnv {
            docker_config: Some(dir.join("docker")),
            registry_auth_file: None,
            home: None,
            helper_dir: Some(dir.to_owned()),
        }
    }

    #[test]
    fn reads_auths_with_hub_key_and_identity_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("docker")).unwrap();
        std::fs::write(
            dir.path().join("docker/config.json"),
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"quay.io":{{"identitytoken":"rt"}}}}}}"#,
                STANDARD.encode("alice:s3cret")
            ),
        )
        .unwrap();
        let e = env(dir.path());
        assert_eq!(
            e.resolve("docker.io").unwrap(),
            Some(Credentials::password("alice", "s3cret"))
        );
        assert_eq!(
            e.resolve("quay.io").unwrap(),
            Some(Credentials::IdentityToken("rt".into()))
        );
        assert_eq!(e.resolve("ghcr.io").unwrap(), None);
        let dbg = format!("{:?}", e.resolve("docker.io").unwrap());
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }

    #[test]
    fn registry_auth_file_comes_first_and_missing_files_are_anonymous() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = env(dir.path());
        assert_eq!(e.resolve("r:5000").unwrap(), None);
        let auth = dir.path().join("auth.json");
        std::fs::write(
            &auth,
            r#"{"auths":{"r:5000":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        e.registry_auth_file = Some(auth);
        assert_eq!(
            e.resolve("r:5000").unwrap(),
            Some(Credentials::password("u", "p"))
        );
    }

    #[test]
    fn runs_cred_helpers_with_server_on_stdin() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("docker")).unwrap();
        std::fs::write(
            dir.path().join("docker/config.json"),
            r#"{"credHelpers":{"r.example":"fake"},"credsStore":"store"}"#,
        )
        .unwrap();
        // The helper echoes the server it was asked about into the username.
        let helper = dir.path().join("docker-credential-fake");
        std::fs::write(
            &helper,
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread s\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"u-%s\",\"Secret\":\"pw\"}' \"$s\" \"$s\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = dir.path().join("docker-credential-store");
        std::fs::write(
            &store,
            "#!/bin/sh\necho 'credentials not found in native keychain'\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = env(dir.path());
        assert_eq!(
            e.resolve("r.example").unwrap(),
            Some(Credentials::password("u-r.example", "pw"))
        );
        assert_eq!(e.resolve("other.example").unwrap(), None);
    }

    #[test]
    fn store_and_erase_keep_other_keys_and_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let e = env(dir.path());
        let path = e.docker_config_path().unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, r#"{"psFormat":"x","auths":{"a:1":{"auth":"eDp5"}}}"#).unwrap();
        e.store("r:5000", "u", "p").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            e.resolve("r:5000").unwrap(),
            Some(Credentials::password("u", "p"))
        );
        assert_eq!(
            e.resolve("a:1").unwrap(),
            Some(Credentials::password("x", "y"))
        );
        assert!(e.erase("r:5000").unwrap());
        assert!(!e.erase("r:5000").unwrap());
        assert_eq!(e.resolve("r:5000").unwrap(), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("psFormat"));
    }

    #[test]
    fn store_never_writes_through_a_planted_temp_symlink() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let e = env(dir.path());
        let path = e.docker_config_path().unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // A sentinel outside the config directory, and links to it at the temp names a
        // writer might use.
        let sentinel = dir.path().join("sentinel");
        std::fs::create_dir(&sentinel).unwrap();
        let secret = sentinel.join("secret");
        std::fs::write(&secret, "host secret").unwrap();
        for name in ["config.json.tmp", ".config.json.tmp", "config.tmp"] {
            std::os::unix::fs::symlink(&secret, path.with_file_name(name)).unwrap();
        }
        e.store("r:5000", "user", "pa55word").unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret");
        assert_eq!(std::fs::read_dir(&sentinel).unwrap().count(), 1);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file(), "config.json must be a regular file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            e.resolve("r:5000").unwrap(),
            Some(Credentials::password("user", "pa55word"))
        );
        // No temp file is left next to it.
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp") && !n.contains("config.json.tmp") && n != "config.tmp")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
