//! `ADD <url>` fetching against small HTTP and HTTPS servers on 127.0.0.1: the size cap (with
//! and without `Content-Length`), no HTTPS→HTTP redirect, `--tls-verify`, `--checksum`, and
//! nothing left in the store's tmp area after a refusal.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;

use rbuild_store::Store;

use super::{DownloadError, DownloadOptions, fetch};
use rbuild_oci::Digest;

/// What the server answers.
#[derive(Clone)]
enum Reply {
    /// 200 with `Content-Length`.
    Body(Vec<u8>),
    /// 200 without `Content-Length`, then zeros until the client hangs up (close-delimited,
    /// RFC 9112 §6.3).
    Endless,
    /// 302 to this location.
    Redirect(String),
    /// This status, empty body.
    Status(u16),
}

/// A one-thread-per-connection HTTP/1.1 server, plain or TLS, counting requests and the body
/// bytes of endless replies it managed to send.
struct Server {
    port: u16,
    requests: Arc<AtomicUsize>,
    endless_sent: Arc<AtomicU64>,
}

impl Server {
    fn start(tls: bool, reply: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let endless_sent = Arc::new(AtomicU64::new(0));
        let reply = Arc::new(reply);
        let (req, sent) = (Arc::clone(&requests), Arc::clone(&endless_sent));
        thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { return };
                let (reply, req, sent) = (Arc::clone(&reply), Arc::clone(&req), Arc::clone(&sent));
                thread::spawn(move || {
                    if tls {
                        let conn = rustls::ServerConnection::new(tls_config()).unwrap();
                        let mut s = rustls::StreamOwned::new(conn, tcp);
                        serve(&mut s, &*reply, &req, &sent);
                        s.conn.send_close_notify();
                        let _ = s.flush();
                    } else {
                        let mut tcp = tcp;
                        serve(&mut tcp, &*reply, &req, &sent);
                    }
                });
            }
        });
        Server {
            port,
            requests,
            endless_sent,
        }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve<S: Read + Write>(
    s: &mut S,
    reply: &(dyn Fn(&str) -> Reply + Send + Sync),
    requests: &AtomicUsize,
    endless_sent: &AtomicU64,
) {
    // The request head, byte by byte up to the blank line (GET has no body).
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return,
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let _ = match reply(&path) {
        Reply::Body(body) => s
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|()| s.write_all(&body)),
        Reply::Endless => {
            if s
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                .is_err()
            {
                return;
            }
            let chunk = vec![0u8; 64 * 1024];
            while endless_sent.load(Ordering::SeqCst) < 256 << 20 {
                if s.write_all(&chunk).is_err() {
                    return;
                }
                endless_sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            Ok(())
        }
        Reply::Redirect(to) => s.write_all(
            format!(
                "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        ),
        Reply::Status(code) => s.write_all(
            format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        ),
    };
    let _ = s.flush();
}

/// A self-signed certificate for 127.0.0.1, made once.
fn tls_config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        Arc::new(cfg)
    }))
}

/// Runs `fetch` as the engine does: on a blocking thread inside a runtime.
fn get(
    store: &Store,
    opts: DownloadOptions,
    url: &str,
    checksum: Option<&str>,
) -> Result<Vec<u8>, DownloadError> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (store, url, checksum) = (store.clone(), url.to_owned(), checksum.map(str::to_owned));
    let handle = rt.handle().clone();
    rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            fetch(&handle, &store, &opts, &url, checksum.as_deref())
        })
        .await
        .unwrap()
    })
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    (dir, store)
}

/// Nothing of a download stays in the store's tmp area.
fn assert_tmp_empty(root: &Path) {
    let left: Vec<_> = std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in tmp: {left:?}");
}

#[test]
fn body_is_returned_and_checksum_verified() {
    let (_d, store) = store();
    let body = b"hello from the server\n".to_vec();
    let b = body.clone();
    let server = Server::start(false, move |_| Reply::Body(b.clone()));
    let url = server.url("http", "/file.txt");
    let good = Digest::sha256_of(&body).to_string();
    let got = get(&store, DownloadOptions::default(), &url, Some(&good)).unwrap();
    assert_eq!(got, body);
    let bad = Digest::sha256_of(b"something else").to_string();
    let err = get(&store, DownloadOptions::default(), &url, Some(&bad)).unwrap_err();
    assert!(
        matches!(&err, DownloadError::Checksum { expected, actual }
            if expected.to_string() == bad && actual.to_string() == good),
        "{err}"
    );
    let err = get(&store, DownloadOptions::default(), &url, Some("md5:abc")).unwrap_err();
    assert!(
        matches!(err, DownloadError::InvalidChecksum { .. }),
        "{err}"
    );
    assert_tmp_empty(store.root());
}

#[test]
fn a_body_over_the_cap_is_refused_with_or_without_content_length() {
    let (_d, store) = store();
    let server = Server::start(false, |p| {
        if p == "/endless" {
            Reply::Endless
        } else {
            Reply::Body(vec![b'x'; 5000])
        }
    });
    let cap = DownloadOptions::default().max_bytes(1000);
    let err = get(&store, cap.clone(), &server.url("http", "/big"), None).unwrap_err();
    assert!(
        matches!(err, DownloadError::TooLarge { limit: 1000 }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("larger than the limit of 1000 bytes")
    );
    // Exactly at the cap is fine.
    let at = DownloadOptions::default().max_bytes(5000);
    assert_eq!(
        get(&store, at, &server.url("http", "/big"), None)
            .unwrap()
            .len(),
        5000
    );
    // No Content-Length, an endless body: counted as it arrives.
    let err = get(&store, cap, &server.url("http", "/endless"), None).unwrap_err();
    assert!(
        matches!(err, DownloadError::TooLarge { limit: 1000 }),
        "{err}"
    );
    // The client hung up early: the server could not push anything near the whole body.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let sent = server.endless_sent.load(Ordering::SeqCst);
    assert!(sent < 64 << 20, "the client kept reading: {sent} bytes");
    assert_tmp_empty(store.root());
}

#[test]
fn an_https_to_http_redirect_is_refused_and_never_requested() {
    let (_d, store) = store();
    let plain = Server::start(false, |_| Reply::Body(b"served over plain http".to_vec()));
    let target = plain.url("http", "/evil");
    let tls = Server::start(true, move |_| Reply::Redirect(target.clone()));
    let opts = DownloadOptions::default().tls_verify(false);
    let err = get(&store, opts, &tls.url("https", "/file"), None).unwrap_err();
    let chain = format!("{err}: {:?}", std::error::Error::source(&err));
    assert!(
        chain.contains("refusing a redirect from https to http://"),
        "{chain}"
    );
    assert_eq!(tls.requests(), 1);
    assert_eq!(plain.requests(), 0, "the plain-HTTP target was contacted");
    assert_tmp_empty(store.root());
}

#[test]
fn redirects_that_keep_tls_or_stay_plain_are_followed() {
    let (_d, store) = store();
    let plain = Server::start(false, |p| {
        if p == "/final" {
            Reply::Body(b"plain final".to_vec())
        } else {
            Reply::Redirect("/final".to_owned())
        }
    });
    // http → http, as docker's ADD follows.
    let got = get(
        &store,
        DownloadOptions::default(),
        &plain.url("http", "/start"),
        None,
    )
    .unwrap();
    assert_eq!(got, b"plain final");
    // https → https.
    let tls = Server::start(true, |p| {
        if p == "/final" {
            Reply::Body(b"tls final".to_vec())
        } else {
            Reply::Redirect("/final".to_owned())
        }
    });
    let opts = DownloadOptions::default().tls_verify(false);
    let got = get(&store, opts, &tls.url("https", "/start"), None).unwrap();
    assert_eq!(got, b"tls final");
}

#[test]
fn tls_verify_refuses_an_untrusted_certificate_unless_turned_off() {
    let (_d, store) = store();
    let tls = Server::start(true, |_| Reply::Body(b"over tls".to_vec()));
    let url = tls.url("https", "/f");
    let err = get(&store, DownloadOptions::default(), &url, None).unwrap_err();
    assert!(matches!(err, DownloadError::Request(_)), "{err}");
    let got = get(
        &store,
        DownloadOptions::default().tls_verify(false),
        &url,
        None,
    )
    .unwrap();
    assert_eq!(got, b"over tls");
    assert_tmp_empty(store.root());
}

#[test]
fn an_error_status_names_it() {
    let (_d, store) = store();
    let server = Server::start(false, |_| Reply::Status(404));
    let err = get(
        &store,
        DownloadOptions::default(),
        &server.url("http", "/missing"),
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    assert_tmp_empty(store.root());
}

#[test]
fn an_unreachable_host_is_a_request_error() {
    let (_d, store) = store();
    // A port nobody listens on: bind, learn it, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _ = TcpStream::connect(("127.0.0.1", port));
    let err = get(
        &store,
        DownloadOptions::default(),
        &format!("http://127.0.0.1:{port}/x"),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, DownloadError::Request(_)), "{err}");
}
