//! The client against servers on 127.0.0.1 (and a Unix socket) written
//! here: each reads requests the way an HTTP/1.1 server does, records
//! them, and answers as its test scripts it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;

use super::*;
use crate::tls::TlsPolicy;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// What a scripted server saw.
#[derive(Clone, Default)]
struct Seen {
    /// Each request: its head and body, as text.
    requests: Arc<Mutex<Vec<String>>>,
    accepts: Arc<AtomicUsize>,
}

impl Seen {
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

type Script = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// How a scripted server ends a connection.
#[derive(Clone, Copy, PartialEq)]
enum Close {
    /// When the answer says `Connection: close`, or the client leaves.
    AsAnswered,
    /// After every answer, without saying so.
    Silently,
}

/// Serves one connection: reads requests (head, and the body its
/// Content-Length announces) and answers each with `script`.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, script: Script, seen: Seen, close: Close) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .map_or(0, |v| v.parse().unwrap());
        while buf.len() < end + length {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let request = String::from_utf8_lossy(&buf[..end + length]).into_owned();
        buf.drain(..end + length);
        seen.requests.lock().unwrap().push(request.clone());
        let answer = script(&request);
        if s.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        let _ = s.flush().await;
        if close == Close::Silently || answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n") {
            let _ = s.shutdown().await;
            return;
        }
    }
}

/// A server on 127.0.0.1 (over TLS with `tls`); its port and what it saw.
async fn server(
    script: impl Fn(&str) -> String + Send + Sync + 'static,
    tls: Option<TlsAcceptor>,
    close: Close,
) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Seen::default();
    let script: Script = Arc::new(script);
    let out = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            seen.accepts.fetch_add(1, Ordering::SeqCst);
            let (script, seen, tls) = (script.clone(), seen.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    Some(tls) => {
                        if let Ok(s) = tls.accept(tcp).await {
                            converse(s, script, seen, close).await
                        }
                    }
                    None => converse(tcp, script, seen, close).await,
                }
            });
        }
    });
    (port, out)
}

async fn plain(script: impl Fn(&str) -> String + Send + Sync + 'static) -> (u16, Seen) {
    server(script, None, Close::AsAnswered).await
}

fn acceptor() -> TlsAcceptor {
    let config = duct_proto::tls::server_config(&duct_proto::tls::TlsFiles {
        cert: Some(fixture("tls/server.pem")),
        key: Some(fixture("tls/server.key")),
        ca: None,
    })
    .unwrap();
    TlsAcceptor::from(config)
}

fn trusting(ca: &str) -> Option<Arc<rustls::ClientConfig>> {
    let policy = TlsPolicy {
        verify: true,
        ca: Some(fixture(ca)),
    };
    Some(policy.client_config().unwrap())
}

/// An answer with `status` and a body, closing the connection.
fn answer(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn redirect(status: &str, location: &str) -> String {
    format!("HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

/// The path a recorded request asked for.
fn path_of(request: &str) -> &str {
    request.split(' ').nth(1).unwrap_or_default()
}

fn header<'a>(request: &'a str, name: &str) -> Option<&'a str> {
    request.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A server that answers every connection with `raw` bytes (after
/// reading the request), then holds the connection open if `hold`.
async fn raw(bytes: Vec<u8>, hold: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let bytes = bytes.clone();
            tokio::spawn(async move {
                let mut req = vec![0u8; 4096];
                let _ = s.read(&mut req).await;
                let _ = s.write_all(&bytes).await;
                if hold {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn the_request_carries_defaults_credentials_and_the_callers_headers() {
    let (port, seen) = plain(|_| answer("200 OK", "fine")).await;
    let url = format!("http://us%40er:p%3Aw@127.0.0.1:{port}/x?y=1#top");
    let request = Request::new(Method::POST, &url)
        .unwrap()
        .header(HeaderName::from_static("x-probe"), HeaderValue::from_static("1"))
        .body("abc");
    assert_eq!(
        request.url().as_str(),
        format!("http://127.0.0.1:{port}/x?y=1"),
        "no credentials shown"
    );
    let response = send(&request).await.unwrap();
    assert_eq!((response.status, response.reason.as_str()), (StatusCode::OK, "OK"));
    assert_eq!(response.body, "fine");
    assert_eq!(response.redirects, 0);
    assert!(response.peer_certificates.is_none());

    let sent = &seen.requests()[0];
    assert!(sent.starts_with("POST /x?y=1 HTTP/1.1\r\n"), "{sent}");
    assert_eq!(header(sent, "host"), Some(format!("127.0.0.1:{port}").as_str()));
    assert!(header(sent, "user-agent").unwrap().starts_with("ductd/"));
    assert_eq!(header(sent, "accept"), Some("*/*"));
    // "us@er:p:w", percent-decoded from the URL.
    assert_eq!(header(sent, "authorization"), Some("Basic dXNAZXI6cDp3"));
    assert_eq!(header(sent, "connection"), Some("close"));
    assert_eq!(header(sent, "content-length"), Some("3"));
    assert_eq!(header(sent, "x-probe"), Some("1"));
    assert!(sent.contains("\r\nHost: "), "title-case names: {sent}");
    assert!(sent.ends_with("\r\n\r\nabc"));

    // The caller's Host, User-Agent and Authorization replace the defaults.
    let mut request = Request::get(&format!("http://127.0.0.1:{port}/"))
        .unwrap()
        .basic_auth("a", "b");
    request.headers.insert(HOST, HeaderValue::from_static("vhost.example"));
    request
        .headers
        .insert(AUTHORIZATION, HeaderValue::from_static("Bearer t"));
    request.user_agent = Some(HeaderValue::from_static("Duct HTTP checker"));
    send(&request).await.unwrap();
    let sent = &seen.requests()[1];
    assert_eq!(header(sent, "host"), Some("vhost.example"));
    assert_eq!(header(sent, "authorization"), Some("Bearer t"));
    assert_eq!(header(sent, "user-agent"), Some("Duct HTTP checker"));
    assert_eq!(sent.matches("\r\nHost:").count(), 1, "{sent}");

    // An empty POST still says how long its body is.
    send(&Request::new(Method::POST, &format!("http://127.0.0.1:{port}/")).unwrap())
        .await
        .unwrap();
    assert_eq!(header(&seen.requests()[2], "content-length"), Some("0"));
}

#[test]
fn urls_are_checked_when_the_request_is_made() {
    assert!(matches!(Request::get("ftp://x/"), Err(UrlError::Scheme(_))));
    assert!(matches!(Request::get("example.com"), Err(UrlError::Parse { .. })));
    assert!(matches!(Request::get("http://x:99999/"), Err(UrlError::Parse { .. })));
    assert!(matches!(Request::get("unix:"), Err(UrlError::NoSocket(_))));
    let r = Request::get("http://admin:s3cret@[::1]:8080").unwrap();
    assert_eq!(r.url().as_str(), "http://[::1]:8080/");
    assert_eq!(
        r.auth,
        Some(BasicAuth {
            user: "admin".into(),
            password: "s3cret".into()
        })
    );
    assert!(!format!("{r:?}").contains("s3cret"), "Debug hides the password");
    let r = Request::get("http://es.local:9200/base")
        .unwrap()
        .path("/_cluster/health?level=indices");
    assert_eq!(r.url().as_str(), "http://es.local:9200/_cluster/health?level=indices");
}

#[test]
fn the_host_header_has_the_port_only_when_it_is_not_the_schemes() {
    let host = |url: &str| host_header(&Url::parse(url).unwrap()).unwrap();
    assert_eq!(host("http://[::1]/"), "[::1]");
    assert_eq!(host("http://[::1]:8080/"), "[::1]:8080");
    assert_eq!(host("http://web:80/"), "web");
    assert_eq!(host("https://web:443/"), "web");
    assert_eq!(host("https://web:80/"), "web:80");
    assert_eq!(host("http://BÜCHER.example/"), "xn--bcher-kva.example");
    assert_eq!(host("unix:/var/run/docker.sock"), "localhost");
}

#[test]
fn base64_pads() {
    assert_eq!(base64(b"a"), "YQ==");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"abc"), "YWJj");
    assert_eq!(base64(b""), "");
}

#[tokio::test]
async fn a_chunked_body_from_a_go_server_is_decoded() {
    // prometheus-blackbox-exporter's /metrics: Go's net/http chunks
    // bodies it does not know the length of.
    let captured = std::fs::read(fixture("http/blackbox-metrics-chunked.http")).unwrap();
    let port = raw(captured, false).await;
    let response = send(&Request::get(&format!("http://127.0.0.1:{port}/metrics")).unwrap())
        .await
        .unwrap();
    let text = std::str::from_utf8(&response.body).unwrap();
    assert!(text.starts_with("# HELP"), "{}", &text[..40]);
    assert!(text.contains("blackbox_exporter_build_info"));
    assert!(!text.contains("\r\n"), "no chunk framing left in the body");

    // Read and bounded, but not kept.
    let mut request = Request::get(&format!("http://127.0.0.1:{port}/metrics")).unwrap();
    request.keep_body = false;
    assert!(send(&request).await.unwrap().body.is_empty());
    request.max_body_bytes = 1000;
    assert_eq!(send(&request).await.unwrap_err(), Error::BodyTooLarge(1000));
}

#[tokio::test]
async fn bad_answers_are_errors_that_say_what_was_wrong() {
    let url = |port: u16| format!("http://127.0.0.1:{port}/");
    let get = |port: u16| Request::get(&url(port)).unwrap();

    let garbage = raw(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(), false).await;
    let e = send(&get(garbage)).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid response: not an HTTP response: `SSH-2.0-OpenSSH_9.2`"
    );

    let silent = raw(Vec::new(), true).await;
    let e = send(&get(silent).timeout(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "timed out after 0.3 s while waiting for the answer");
    let https = Request::get(&format!("https://127.0.0.1:{silent}/")).unwrap();
    let e = send(&https.timeout(Duration::from_millis(300))).await.unwrap_err();
    assert_eq!(e.to_string(), "timed out after 0.3 s while in the TLS handshake");

    let mut endless = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    endless.extend(vec![b'x'; 300_000]);
    let port = raw(endless, true).await;
    let mut request = get(port);
    request.max_body_bytes = 100_000;
    assert_eq!(send(&request).await.unwrap_err(), Error::BodyTooLarge(100_000));

    let announced = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n".to_vec(), true).await;
    let mut request = get(announced);
    request.max_body_bytes = 100_000;
    assert_eq!(send(&request).await.unwrap_err(), Error::BodyTooLarge(100_000));

    let short = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(), false).await;
    let e = send(&get(short)).await.unwrap_err();
    assert_eq!(e.to_string(), "the connection closed after 3 of 10 body bytes");

    let cut = raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n".to_vec(),
        false,
    )
    .await;
    let e = send(&get(cut)).await.unwrap_err();
    assert_eq!(e.to_string(), "the connection closed before the last chunk");

    let mut huge = b"HTTP/1.1 200 OK\r\nX-Filler: ".to_vec();
    huge.extend(vec![b'a'; 100 << 10]);
    let port = raw(huge, true).await;
    let e = send(&get(port)).await.unwrap_err();
    assert_eq!(e.to_string(), "invalid response: message head is too large");

    let mute = raw(Vec::new(), false).await;
    let e = send(&get(mute)).await.unwrap_err();
    assert_eq!(e.to_string(), "the server closed the connection without answering");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = send(&get(closed)).await.unwrap_err();
    assert_eq!(e.to_string(), format!("connection refused by 127.0.0.1:{closed}"));

    let e = send(&Request::get("http://no-such-host.invalid/").unwrap())
        .await
        .unwrap_err();
    assert!(
        e.to_string().starts_with("cannot resolve no-such-host.invalid: "),
        "{e}"
    );
}

#[tokio::test]
async fn a_relative_location_whose_query_holds_a_url_is_relative() {
    let (port, seen) = plain(|r| match path_of(r) {
        "/start" => redirect("302 Found", "/login?next=https://x.example/"),
        _ => answer("200 OK", "login page"),
    })
    .await;
    let response = send(&Request::get(&format!("http://127.0.0.1:{port}/start")).unwrap())
        .await
        .unwrap();
    assert_eq!(response.body, "login page");
    assert_eq!(
        response.url.as_str(),
        format!("http://127.0.0.1:{port}/login?next=https://x.example/")
    );
    assert_eq!(response.redirects, 1);
    assert_eq!(path_of(&seen.requests()[1]), "/login?next=https://x.example/");
}

#[tokio::test]
async fn credentials_and_headers_stay_with_their_origin() {
    let (elsewhere, there) = plain(|_| answer("200 OK", "elsewhere")).await;
    let (port, home) = plain(move |r| match path_of(r) {
        "/relative" => redirect("302 Found", "/private"),
        "/absolute" => redirect(
            "301 Moved Permanently",
            &format!("http://127.0.0.1:{}/private", local_port(r)),
        ),
        "/away" => redirect("307 Temporary Redirect", &format!("http://127.0.0.1:{elsewhere}/")),
        _ => answer("200 OK", "private"),
    })
    .await;
    let secret = |path: &str| {
        Request::get(&format!("http://user:pw@127.0.0.1:{port}{path}"))
            .unwrap()
            .header(HeaderName::from_static("x-token"), HeaderValue::from_static("s3cret"))
    };
    for path in ["/relative", "/absolute"] {
        let response = send(&secret(path)).await.unwrap();
        assert_eq!(response.body, "private");
    }
    let requests = home.requests();
    assert_eq!(requests.len(), 4);
    for r in &requests {
        assert_eq!(
            header(r, "authorization"),
            Some("Basic dXNlcjpwdw=="),
            "same origin: {r}"
        );
        assert_eq!(header(r, "x-token"), Some("s3cret"), "{r}");
    }

    let response = send(&secret("/away")).await.unwrap();
    assert_eq!(response.body, "elsewhere");
    let r = &there.requests()[0];
    assert_eq!(header(r, "authorization"), None, "another origin: {r}");
    assert_eq!(header(r, "x-token"), None, "{r}");
    assert!(header(r, "user-agent").is_some(), "{r}");
    assert_eq!(header(r, "host"), Some(format!("127.0.0.1:{elsewhere}").as_str()));
}

/// The port a recorded request was sent to, from its Host header.
fn local_port(request: &str) -> u16 {
    header(request, "host")
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn methods_change_only_where_redirects_say_so() {
    let (port, seen) = plain(|r| match path_of(r) {
        "/see-other" => redirect("303 See Other", "/done"),
        "/found" => redirect("302 Found", "/done"),
        "/temporary" => redirect("307 Temporary Redirect", "/done"),
        "/loop" => redirect("302 Found", "/loop"),
        _ => answer("200 OK", "done"),
    })
    .await;
    let post = |path: &str| {
        Request::new(Method::POST, &format!("http://127.0.0.1:{port}{path}"))
            .unwrap()
            .body("x=1")
    };
    for path in ["/see-other", "/found", "/temporary"] {
        send(&post(path)).await.unwrap();
    }
    let followed: Vec<String> = seen
        .requests()
        .iter()
        .filter(|r| path_of(r) == "/done")
        .map(|r| format!("{} {}", r.split(' ').next().unwrap(), r.ends_with("x=1")))
        .collect();
    assert_eq!(followed, ["GET false", "GET false", "POST true"]);

    let mut looping = Request::get(&format!("http://127.0.0.1:{port}/loop")).unwrap();
    looping.max_redirects = 3;
    assert_eq!(send(&looping).await.unwrap_err(), Error::TooManyRedirects(3));
    looping.max_redirects = 0;
    let response = send(&looping).await.unwrap();
    assert_eq!(response.status, StatusCode::FOUND);
    assert_eq!(response.headers.get(LOCATION).unwrap(), "/loop");
}

#[tokio::test]
async fn https_answers_carry_the_certificate_of_the_server_that_gave_them() {
    let (tls_port, _) = server(|_| answer("200 OK", "secure"), Some(acceptor()), Close::AsAnswered).await;
    let url = format!("https://127.0.0.1:{tls_port}/");
    let mut request = Request::get(&url).unwrap();
    request.tls = trusting("tls/ca.pem");
    let response = send(&request).await.unwrap();
    assert_eq!(response.body, "secure");
    let leaf = &response.peer_certificates.expect("a certificate")[0];
    let pem = std::fs::read(fixture("tls/server.pem")).unwrap();
    let expected = rustls::pki_types::pem::PemObject::from_pem_slice(&pem).map(|c: CertificateDer<'_>| c.into_owned());
    assert_eq!(Some(leaf), expected.as_ref().ok());
    assert!(response.timings.tls.is_some());

    request.tls = trusting("tls/wrong-ca.pem");
    let e = send(&request).await.unwrap_err();
    assert!(e.to_string().contains("invalid peer certificate: UnknownIssuer"), "{e}");

    request.tls = Some(
        TlsPolicy {
            verify: false,
            ca: None,
        }
        .client_config()
        .unwrap(),
    );
    assert_eq!(send(&request).await.unwrap().body, "secure");
}

#[tokio::test]
async fn nothing_secret_follows_a_hop_from_https_to_http() {
    // https → http → back to the https origin: the credentials and the
    // header stay behind from the downgrade on, and the certificate is
    // the one of the server that answered last (none over http).
    let (plain_port, over_http) = plain(|r| {
        if path_of(r).starts_with("/up?") {
            redirect("302 Found", &format!("https://127.0.0.1:{}/final", back_port(r)))
        } else {
            answer("200 OK", "over http")
        }
    })
    .await;
    let (tls_port, over_https) = server(
        move |r| match path_of(r) {
            "/down" => redirect("302 Found", &format!("http://127.0.0.1:{plain_port}/")),
            "/round" => redirect(
                "302 Found",
                &format!("http://127.0.0.1:{plain_port}/up?back={}", local_port(r)),
            ),
            _ => answer("200 OK", "final"),
        },
        Some(acceptor()),
        Close::AsAnswered,
    )
    .await;
    let secret = |path: &str| {
        let mut r = Request::get(&format!("https://user:pw@127.0.0.1:{tls_port}{path}"))
            .unwrap()
            .header(HeaderName::from_static("x-token"), HeaderValue::from_static("s3cret"));
        r.tls = trusting("tls/ca.pem");
        r
    };
    let response = send(&secret("/down")).await.unwrap();
    assert_eq!(response.body, "over http");
    assert!(response.peer_certificates.is_none(), "the answer came over http");
    assert!(response.timings.tls.is_some(), "the first hop's handshake still counts");

    let response = send(&secret("/round")).await.unwrap();
    assert_eq!(response.body, "final");
    assert!(response.peer_certificates.is_some());
    for r in over_http.requests() {
        assert_eq!(header(&r, "authorization"), None, "{r}");
        assert_eq!(header(&r, "x-token"), None, "{r}");
    }
    let at_home = over_https.requests();
    let last = at_home.last().unwrap();
    assert_eq!(path_of(last), "/final");
    assert_eq!(header(last, "authorization"), None, "not after a downgrade: {last}");
    assert_eq!(header(&at_home[0], "authorization"), Some("Basic dXNlcjpwdw=="));
}

/// The port in a recorded `/up?back=PORT` request.
fn back_port(request: &str) -> u16 {
    path_of(request).rsplit('=').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn idn_hosts_are_sent_and_verified_in_their_ascii_form() {
    let (port, seen) = server(|_| answer("200 OK", "idn"), Some(acceptor()), Close::AsAnswered).await;
    let mut request = Request::get(&format!("https://Bücher.example:{port}/")).unwrap();
    request.connect_to = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    request.tls = trusting("tls/ca.pem");
    let response = send(&request).await.unwrap();
    assert_eq!(response.body, "idn");
    assert_eq!(response.url.host_str(), Some("xn--bcher-kva.example"));
    let sent = &seen.requests()[0];
    assert_eq!(
        header(sent, "host"),
        Some(format!("xn--bcher-kva.example:{port}").as_str())
    );
}

fn socket_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("duct-http-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn unix_sockets_are_written_as_duct_writes_them() {
    let dir = socket_dir("unix");
    let path = dir.join("docker.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let seen = Seen::default();
    let out = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let script: Script = Arc::new(|_| answer("200 OK", "[]"));
            tokio::spawn(converse(s, script, seen.clone(), Close::AsAnswered));
        }
    });
    let url = format!("unix:{}", path.display());
    let request = Request::get(&url).unwrap().path("/containers/json?all=1");
    let response = send(&request).await.unwrap();
    assert_eq!(response.body, "[]");
    let sent = &out.requests()[0];
    assert!(sent.starts_with("GET /containers/json?all=1 HTTP/1.1\r\n"), "{sent}");
    assert_eq!(header(sent, "host"), Some("localhost"));

    let missing = format!("unix:{}", dir.join("none.sock").display());
    let e = send(&Request::get(&missing).unwrap()).await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("cannot connect to {}/none.sock: ", dir.display())),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn kept(body: &str) -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

#[tokio::test]
async fn a_keep_alive_client_reuses_one_connection_per_origin() {
    let (port, seen) = server(|_| kept("again"), None, Close::AsAnswered).await;
    let client = Client::keep_alive();
    let request = Request::get(&format!("http://127.0.0.1:{port}/")).unwrap();
    for _ in 0..3 {
        assert_eq!(client.send(&request).await.unwrap().body, "again");
    }
    assert_eq!(seen.accepts(), 1);
    assert!(seen.requests().iter().all(|r| header(r, "connection").is_none()));

    // A fresh client opens (and closes) one per request.
    for _ in 0..2 {
        send(&request).await.unwrap();
    }
    assert_eq!(seen.accepts(), 3);
}

#[tokio::test]
async fn a_connection_the_server_dropped_is_replaced() {
    let (port, seen) = server(|_| kept("fresh"), None, Close::Silently).await;
    let client = Client::keep_alive();
    let request = Request::get(&format!("http://127.0.0.1:{port}/")).unwrap();
    for _ in 0..3 {
        assert_eq!(client.send(&request).await.unwrap().body, "fresh");
        // Give the close time to arrive, as between two ticks.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.accepts(), 3);
}
