//! A real registry process (CNCF distribution) on a free loopback port, for tests.
//!
//! [`Registry::start`] writes a config into a temp dir, runs `docker-registry serve CONFIG`
//! with filesystem storage and `storage.delete.enabled: true`, and waits until `/v2/` answers.
//! The registry prints one access line per request on stdout (Apache combined format); the
//! fixture collects them so that tests can count requests ([`Registry::access_log`]).
//! The process is killed when the fixture is dropped.
//!
//! ```no_run
//! use rbuild_testkit::registry::{Registry, RegistryOptions};
//!
//! let reg = Registry::start(RegistryOptions::default().htpasswd("user", "secret"))?;
//! println!("registry at {}", reg.host());
//! let puts = reg.access_log().iter().filter(|l| l.method == "PUT").count();
//! assert_eq!(puts, 0);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The registry binary the Debian package `docker-registry` installs.
pub const REGISTRY_BINARY: &str = "docker-registry";

/// How to start the registry.
#[derive(Debug, Default, Clone)]
pub struct RegistryOptions {
    htpasswd: Option<(String, String)>,
}

impl RegistryOptions {
    /// Requires basic auth with this user and password (an htpasswd file made with
    /// `htpasswd -Bbn`, bcrypt being the only hash distribution accepts).
    #[must_use]
    pub fn htpasswd(mut self, user: &str, password: &str) -> Self {
        self.htpasswd = Some((user.to_owned(), password.to_owned()));
        self
    }
}

/// One access-log line: what the registry received and answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLine {
    /// HTTP method, e.g. `HEAD`.
    pub method: String,
    /// Request target (path and query), e.g. `/v2/app/blobs/sha256:…`.
    pub path: String,
    /// Response status code.
    pub status: u16,
}

impl AccessLine {
    /// Parses an Apache combined log line:
    /// `127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "" "agent"`.
    pub fn parse(line: &str) -> Option<Self> {
        let start = line.find('"')?;
        let rest = &line[start + 1..];
        let end = rest.find('"')?;
        let mut request = rest[..end].split(' ');
        let method = request.next()?.to_owned();
        let path = request.next()?.to_owned();
        let status = rest[end + 1..].split_whitespace().next()?.parse().ok()?;
        Some(Self {
            method,
            path,
            status,
        })
    }
}

/// A running `docker-registry` process; killed on drop.
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<AccessLine>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("addr", &self.addr)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Starts a registry and waits (up to 20 s) until `/v2/` answers.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] when `docker-registry` (or `htpasswd`, with auth) is not
    /// installed; any IO error of the temp dir or the process; `TimedOut` when the registry
    /// never answers.
    pub fn start(options: RegistryOptions) -> io::Result<Self> {
        // The free port is found by binding port 0 and releasing it, so another process may
        // take it in between: try a few times.
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(&options) {
                Ok(r) => return Ok(r),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("registry did not start")))
    }

    fn start_once(options: &RegistryOptions) -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let mut config = format!(
            "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\nhttp: {{addr: {addr}, secret: testkit}}\n",
            data.display()
        );
        if let Some((user, password)) = &options.htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .stderr(Stdio::null())
                .output()?;
            if !out.status.success() {
                return Err(io::Error::other("htpasswd -Bbn failed"));
            }
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, &out.stdout)?;
            config.push_str(&format!(
                "auth:\n  htpasswd: {{realm: testkit, path: {}}}\n",
                path.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;

        let mut child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(l) = AccessLine::parse(&line)
                        && let Ok(mut v) = log.lock()
                    {
                        v.push(l);
                    }
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            let stderr = Arc::clone(&stderr);
            thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut v) = stderr.lock() {
                        v.push(line);
                    }
                }
            });
        }
        let mut registry = Self {
            child,
            addr,
            dir,
            log,
            stderr,
        };
        registry.wait_ready(Duration::from_secs(20))?;
        // Readiness probes are not the test's requests.
        registry.clear_access_log();
        Ok(registry)
    }

    fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "docker-registry exited with {status}: {}",
                    self.stderr_lines().join("\n")
                )));
            }
            if let Ok(code) = probe(self.addr)
                && (code == 200 || code == 401)
            {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "docker-registry did not answer /v2/ in time",
        ))
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The registry's storage root.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temp dir holding the config, htpasswd and data.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Access-log lines received so far (requests since start or the last
    /// [`clear_access_log`](Self::clear_access_log)).
    ///
    /// The registry writes a line after answering; [`settle`](Self::settle) waits for
    /// stragglers.
    pub fn access_log(&self) -> Vec<AccessLine> {
        self.log.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Forgets the access lines collected so far.
    pub fn clear_access_log(&self) {
        self.settle();
        if let Ok(mut v) = self.log.lock() {
            v.clear();
        }
    }

    /// Waits until no access line arrived for 100 ms (the log is written asynchronously).
    pub fn settle(&self) {
        let mut n = usize::MAX;
        for _ in 0..50 {
            let now = self.log.lock().map(|v| v.len()).unwrap_or(0);
            if now == n {
                return;
            }
            n = now;
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The registry's stderr (its structured log), for diagnostics.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `GET /v2/` and returns the status code.
fn probe(addr: SocketAddr) -> io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other("no HTTP status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_access_lines() {
        let l = AccessLine::parse(
            r#"127.0.0.1 - - [25/Nov/2026:18:14:21 +0000] "HEAD /v2/x/blobs/sha256:ab HTTP/1.1" 404 157 "" "curl/7.88.1""#,
        )
        .unwrap();
        assert_eq!(l.method, "HEAD");
        assert_eq!(l.path, "/v2/x/blobs/sha256:ab");
        assert_eq!(l.status, 404);
        assert!(AccessLine::parse("time=x level=info").is_none());
    }

    #[test]
    fn starts_answers_and_logs() {
        let reg = match Registry::start(RegistryOptions::default()) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!("skipping: {REGISTRY_BINARY} not installed");
                return;
            }
            Err(e) => panic!("registry did not start: {e}"),
        };
        assert_eq!(probe(reg.addr()).unwrap(), 200);
        reg.settle();
        let log = reg.access_log();
        assert!(
            log.iter().any(|l| l.method == "GET" && l.path == "/v2/"),
            "{log:?}"
        );
    }

    #[test]
    fn htpasswd_registry_asks_for_credentials() {
        let reg = match Registry::start(RegistryOptions::default().htpasswd("u", "p")) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!("skipping: {REGISTRY_BINARY} or htpasswd not installed");
                return;
            }
            Err(e) => panic!("registry did not start: {e}"),
        };
        assert_eq!(probe(reg.addr()).unwrap(), 401);
    }
}
