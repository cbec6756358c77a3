//! The HTTPS listener (`[server.tls]`): HTTP/2 by ALPN beside HTTP/1.1 (curl, h2load), TLS
//! 1.2 and 1.3 only (openssl offering TLS 1.1 is refused by the server), the HTTP/2 abuse
//! limits (rapid reset, oversized header blocks, the header count), the same edge behind
//! both protocols (reservations, problem+json, the proxied catalog) and a certificate renewed
//! on disk served without a restart.
//!
//! curl, h2load (`nghttp2-client`) and openssl are required: `scripts/test.sh` installs them,
//! and a test fails, naming the tool, when one is missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::config::{Config, LimitsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use testkit::tls::{ServerCert, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A scratch directory laid out as a Key Vault CSI or Secret volume lays out its files:
/// `tls.crt` and `tls.key` are links through `..data`, a link to the current version's
/// directory, and a renewal renames a new `..data` over the old one.
struct CertDir {
    root: PathBuf,
    versions: usize,
}

impl CertDir {
    fn new(first: &ServerCert) -> CertDir {
        let root = std::env::temp_dir().join(format!("tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&root).unwrap();
        let mut dir = CertDir { root, versions: 0 };
        dir.publish(&first.cert_pem, &first.key_pem);
        std::os::unix::fs::symlink("..data/tls.crt", dir.cert()).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", dir.key()).unwrap();
        dir
    }

    fn cert(&self) -> PathBuf {
        self.root.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.root.join("tls.key")
    }

    /// Writes a new version and swaps `..data` to it in one rename.
    fn publish(&mut self, cert_pem: &str, key_pem: &str) {
        self.versions += 1;
        let version = format!("..v{}", self.versions);
        let dir = self.root.join(&version);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("tls.crt"), cert_pem).unwrap();
        std::fs::write(dir.join("tls.key"), key_pem).unwrap();
        let next = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &next).unwrap();
        std::fs::rename(&next, self.root.join("..data")).unwrap();
    }

    fn ca_file(&self, ca: &TestCa) -> PathBuf {
        ca.write_ca(&self.root)
    }
}

impl Drop for CertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn serve_tls(config: &mut Config, dir: &CertDir) {
    config.server.tls.listen = Some("127.0.0.1:0".into());
    config.server.tls.cert_file = Some(dir.cert());
    config.server.tls.key_file = Some(dir.key());
    config.server.tls.reload_interval_ms = 100;
}

/// A gateway on the in-memory store serving HTTPS with a certificate for localhost.
async fn tls_gateway() -> (testkit::TestGateway, CertDir, PathBuf, SocketAddr) {
    tls_gateway_with(|_| {}).await
}

async fn tls_gateway_with(
    adjust: impl FnOnce(&mut Config),
) -> (testkit::TestGateway, CertDir, PathBuf, SocketAddr) {
    let ca = TestCa::new("stockgate tls test CA");
    let dir = CertDir::new(&ca.issue(&["localhost", "127.0.0.1"]));
    let ca_file = dir.ca_file(&ca);
    let gw = testkit::start_gateway_with(|c| {
        serve_tls(c, &dir);
        adjust(c);
    })
    .await;
    let addr = gw.server.as_ref().and_then(|s| s.tls_addr).unwrap();
    (gw, dir, ca_file, addr)
}

/// Runs a tool the tests need, failing loudly when it is not installed.
fn run(tool: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                panic!("`{tool}` is required by the TLS tests; scripts/test.sh installs it")
            }
            _ => panic!("cannot run `{tool}`: {e}"),
        })
}

async fn run_async(tool: &'static str, args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(tool, &args)
    })
    .await
    .unwrap()
}

/// curl against the HTTPS listener: `(http version, status, body)` from `-w`.
async fn curl(ca: &Path, addr: SocketAddr, extra: &[&str], path: &str) -> (String, u16, String) {
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "--cacert".into(),
        ca.display().to_string(),
        "--resolve".into(),
        format!("localhost:{}:127.0.0.1", addr.port()),
        "-w".into(),
        "\n%{http_version} %{http_code}".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args.push(format!("https://localhost:{}{path}", addr.port()));
    let out = run_async("curl", args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (version, status) = tail.split_once(' ').unwrap_or(("", "0"));
    (
        version.to_owned(),
        status.parse().unwrap_or(0),
        format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_http2_by_alpn_and_http1_on_the_same_listener() {
    let (gw, _dir, ca, addr) = tls_gateway().await;
    let token = gw.idp.token("alice");
    let auth = format!("authorization: Bearer {token}");
    let body = r#"{"sku":"HOT","qty":1}"#;

    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let (got, status, text) = curl(&ca, addr, &[flag], "/api/v1/stock/HOT").await;
        assert_eq!((got.as_str(), status), (version, 200), "{flag}: {text}");

        // A reservation, and the edge's problem+json, over either protocol.
        let key = format!("idempotency-key: tls-{version}");
        let (got, status, text) = curl(
            &ca,
            addr,
            &[
                flag,
                "-H",
                &auth,
                "-H",
                &key,
                "-H",
                "content-type: application/json",
                "-d",
                body,
            ],
            "/api/v1/reservations",
        )
        .await;
        assert_eq!((got.as_str(), status), (version, 201), "{flag}: {text}");
        let (_, status, text) = curl(&ca, addr, &[flag, "-d", body], "/api/v1/reservations").await;
        assert_eq!(status, 401, "{flag}: {text}");
        assert!(text.contains(r#""code":"#), "{flag}: {text}");
    }
    assert_eq!(gw.snapshot("HOT").await.available, 3);
    // The cleartext listener serves beside it.
    let plain = gw
        .http
        .get(gw.url("/api/v1/stock/HOT"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_requests_reach_the_upstream_over_http2_in_origin_form() {
    let upstream = testkit::Upstream::start();
    let ca = TestCa::new("stockgate tls test CA");
    let dir = CertDir::new(&ca.issue(&["localhost"]));
    let ca_file = dir.ca_file(&ca);
    let mut config = testkit::edge_config(upstream.addr, None);
    config.cache.enabled = false;
    serve_tls(&mut config, &dir);
    let edge = testkit::start_edge(config, None).await;
    let addr = edge.tls_addr.unwrap();
    let (version, status, text) =
        curl(&ca_file, addr, &["--http2"], "/api/v1/products/HOT?x=1").await;
    assert_eq!((version.as_str(), status), ("2", 200), "{text}");
    assert!(text.contains("HOT"), "{text}");
    assert_eq!(
        *upstream.catalog.uris.lock().unwrap(),
        vec!["/api/v1/products/HOT?x=1".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_completes_every_request_without_errors() {
    let (_gw, _dir, _ca, addr) = tls_gateway().await;
    let url = format!("https://127.0.0.1:{}/api/v1/stock/HOT", addr.port());
    let args = ["-n", "2000", "-c", "4", "-m", "10", &url]
        .map(str::to_owned)
        .to_vec();
    let out = run_async("h2load", args).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert!(
        text.contains("2000 succeeded, 0 failed, 0 errored, 0 timeout"),
        "{text}"
    );
    assert!(text.contains("status codes: 2000 2xx"), "{text}");
}

/// `openssl s_client` offering exactly one protocol version, ciphers allowed down to security
/// level 0 so the client really sends a TLS 1.1 hello and only the server can refuse it.
async fn s_client(addr: SocketAddr, version: &str) -> String {
    let connect = addr.to_string();
    let args = [
        "s_client",
        "-connect",
        &connect,
        "-servername",
        "localhost",
        version,
        "-cipher",
        "DEFAULT@SECLEVEL=0",
    ]
    .map(str::to_owned)
    .to_vec();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("openssl")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("`openssl` is required by the TLS tests ({e})"));
        let _ = child.stdin.take();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_1_and_1_0_hellos_are_refused_by_the_server() {
    let (_gw, _dir, _ca, addr) = tls_gateway().await;
    for old in ["-tls1_1", "-tls1"] {
        let text = s_client(addr, old).await;
        // The hello went out and the server answered it with an alert (rustls: handshake
        // failure), not the client giving up before sending one.
        assert!(text.contains("CONNECTED"), "{old}: {text}");
        assert!(!text.contains("no protocols available"), "{old}: {text}");
        assert!(text.contains("SSL alert number 40"), "{old}: {text}");
        assert!(text.contains("Cipher is (NONE)"), "{old}: {text}");
    }
    for (current, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let text = s_client(addr, current).await;
        assert!(
            text.contains(&format!("Protocol  : {name}")) || text.contains(&format!("New, {name}")),
            "{current}: {text}"
        );
    }
}

/// A TLS client trusting `ca_pem`, offering `alpn`.
async fn connect(addr: SocketAddr, ca_pem: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

// HTTP/2 frames (RFC 9113 §4.1, §6), written by hand so the test controls their timing.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM_AND_HEADERS: u8 = 0x1 | 0x4;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
/// SETTINGS_INITIAL_WINDOW_SIZE = 0: the client takes no response body until it says so.
const NO_WINDOW: [u8; 6] = [0x0, 0x4, 0, 0, 0, 0];
const ENHANCE_YOUR_CALM: u32 = 0xb;
const COMPRESSION_ERROR: u32 = 0x9;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// `GET path` as an HPACK block: static-table method and scheme, literal path and authority.
fn get_request(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x87];
    for (name_index, value) in [(4u8, path), (1u8, "localhost")] {
        assert!(value.len() < 127);
        block.push(name_index); // literal without indexing, indexed name
        block.push(value.len() as u8);
        block.extend(value.as_bytes());
    }
    block
}

/// The HTTP/2 connection preface and the SETTINGS exchange, as a client opens a connection;
/// `settings` are the client's (6 bytes each: identifier, value).
async fn h2_handshake(stream: &mut TlsStream<TcpStream>, settings: &[u8]) {
    stream.write_all(PREFACE).await.unwrap();
    stream
        .write_all(&frame(SETTINGS, 0, 0, settings))
        .await
        .unwrap();
    read_until(stream, SETTINGS, 0)
        .await
        .expect("server settings");
    stream
        .write_all(&frame(SETTINGS, ACK, 0, &[]))
        .await
        .unwrap();
}

/// One frame, read within `deadline`: `(type, flags, stream id, payload)`; `None` when the
/// connection ended or the deadline passed.
async fn read_frame(
    stream: &mut TlsStream<TcpStream>,
    deadline: Instant,
) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, stream.read_exact(&mut head))
        .await
        .ok()?
        .ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    let stream_id = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
    Some((head[3], head[4], stream_id, payload))
}

/// Reads frames until the response HEADERS of every stream in `ids` arrived (true) or 5 s pass.
async fn headers_of(stream: &mut TlsStream<TcpStream>, ids: &[u32]) -> bool {
    let mut waiting: std::collections::HashSet<u32> = ids.iter().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Some((kind, _, id, _)) = read_frame(stream, deadline).await {
        if kind == HEADERS && waiting.remove(&id) && waiting.is_empty() {
            return true;
        }
    }
    false
}

/// Reads frames until `want` (with all of `flags`) arrives: its payload; `None` when the
/// connection ends or 5 s pass first.
async fn read_until(stream: &mut TlsStream<TcpStream>, want: u8, flags: u8) -> Option<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (kind, got, _, payload) = read_frame(stream, deadline).await?;
        if kind == want && got & flags == flags {
            return Some(payload);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_goaway_enhance_your_calm() {
    let ca = TestCa::new("stockgate tls test CA");
    let dir = CertDir::new(&ca.issue(&["localhost"]));
    let gw = testkit::start_gateway_with(|c| serve_tls(c, &dir)).await;
    let addr = gw.server.as_ref().and_then(|s| s.tls_addr).unwrap();
    // One ordinary request, so the count below is known to see the route's series.
    let plain = gw
        .http
        .get(gw.url("/api/v1/stock/HOT"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    let mut stream = connect(addr, &ca.ca_pem(), &[b"h2"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    h2_handshake(&mut stream, &[]).await;

    // CVE-2023-44487: open a stream and cancel it at once, many times, in one burst.
    let request = get_request("/api/v1/stock/HOT");
    let mut burst = Vec::new();
    for n in 0..500u32 {
        let id = 2 * n + 1;
        burst.extend(frame(HEADERS, END_STREAM_AND_HEADERS, id, &request));
        burst.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    // The server may close while the burst is still going out.
    let _ = stream.write_all(&burst).await;
    let goaway = read_until(&mut stream, GOAWAY, 0).await.expect("a GOAWAY");
    let code = u32::from_be_bytes([goaway[4], goaway[5], goaway[6], goaway[7]]);
    assert_eq!(code, ENHANCE_YOUR_CALM);
    // Far fewer than the 500 streams were served before the connection was refused.
    let served = gw.metrics().await;
    let stock_requests: u64 = served
        .lines()
        .filter(|l| l.starts_with("stockgate_requests_total{route=\"stock\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        (1..100).contains(&stock_requests),
        "{stock_requests} requests served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_without_a_request_is_closed_at_the_header_deadline() {
    let (_gw, _dir, ca, addr) = tls_gateway_with(|c| c.limits.header_read_timeout_ms = 500).await;
    let ca = std::fs::read_to_string(ca).unwrap();
    // ALPN h2 and then silence: Pingora's HTTP/2 handshake waits for the preface forever.
    let mut silent = connect(addr, &ca, &[b"h2"]).await;
    // Half of the preface, then silence.
    let mut halfway = connect(addr, &ca, &[b"h2"]).await;
    halfway.write_all(&PREFACE[..10]).await.unwrap();
    // The whole handshake, but no stream.
    let mut idle = connect(addr, &ca, &[b"h2"]).await;
    h2_handshake(&mut idle, &[]).await;
    for (what, stream) in [
        ("silent", &mut silent),
        ("halfway", &mut halfway),
        ("no stream", &mut idle),
    ] {
        assert!(
            closed_within(stream, Duration::from_secs(5)).await,
            "{what}: still open after 5 s"
        );
    }
    // A connection that sends its request in time is served, and stays open past the
    // deadline for the next one (the idle timeout applies from then on).
    let mut served = connect(addr, &ca, &[b"h2"]).await;
    h2_handshake(&mut served, &[]).await;
    let request = get_request("/api/v1/stock/HOT");
    served
        .write_all(&frame(HEADERS, END_STREAM_AND_HEADERS, 1, &request))
        .await
        .unwrap();
    read_until(&mut served, DATA, END_STREAM)
        .await
        .expect("the first answer");
    tokio::time::sleep(Duration::from_millis(800)).await;
    served
        .write_all(&frame(HEADERS, END_STREAM_AND_HEADERS, 3, &request))
        .await
        .unwrap();
    read_until(&mut served, DATA, END_STREAM)
        .await
        .expect("the second answer, after the deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_at_the_write_timeout() {
    let (gw, _dir, ca, addr) = tls_gateway_with(|c| c.limits.write_timeout_ms = 300).await;
    let mut stream = connect(addr, &std::fs::read_to_string(ca).unwrap(), &[b"h2"]).await;
    // A client that opens no flow-control window never takes the answer's body: without a
    // write deadline the stream, and its place among the requests in flight, stays forever.
    h2_handshake(&mut stream, &NO_WINDOW).await;
    let started = Instant::now();
    let request = get_request("/api/v1/stock/HOT");
    stream
        .write_all(&frame(HEADERS, END_STREAM_AND_HEADERS, 1, &request))
        .await
        .unwrap();
    read_until(&mut stream, HEADERS, 0)
        .await
        .expect("the answer's headers");
    // Pingora gives up the body at the deadline and ends the stream (an empty DATA frame
    // with END_STREAM): the client sees a cut-off answer, the gateway has its place back.
    assert!(
        read_until(&mut stream, DATA, END_STREAM).await.is_some(),
        "the stalled stream is ended"
    );
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(gw.metrics_show("stockgate_in_flight_requests 0").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_too_many_requests_open_is_refused_on_every_protocol() {
    let (gw, _dir, ca, addr) = tls_gateway_with(|c| c.limits.max_in_flight_per_client = 3).await;
    // Three HTTP/2 streams whose answers the client does not take (no window): open until
    // the write deadline (10 s), as a slow reader or a slow upstream keeps them.
    let mut stream = connect(addr, &std::fs::read_to_string(ca).unwrap(), &[b"h2"]).await;
    h2_handshake(&mut stream, &NO_WINDOW).await;
    let request = get_request("/api/v1/stock/HOT");
    for id in [1, 3, 5] {
        let headers = frame(HEADERS, END_STREAM_AND_HEADERS, id, &request);
        stream.write_all(&headers).await.unwrap();
    }
    assert!(gw.metrics_show("stockgate_in_flight_requests 3").await);

    // More streams on the same connection, each still "sending its body" (no END_STREAM):
    // each is refused at once, not held while the gateway waits for a body it will drop.
    let started = Instant::now();
    for id in [7, 9, 11, 13] {
        let headers = frame(HEADERS, END_HEADERS, id, &request);
        stream.write_all(&headers).await.unwrap();
    }
    assert!(
        headers_of(&mut stream, &[7, 9, 11, 13]).await,
        "streams answered"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // The same client address on another connection and protocol is over its cap ...
    let refused = gw
        .http
        .get(gw.url("/api/v1/stock/HOT"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "too_many_in_flight");
    // ... another client is not.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let served = other.get(gw.url("/api/v1/stock/HOT")).send().await.unwrap();
    assert_eq!(served.status(), 200);

    // The client's streams end when its connection does; then it is served again.
    drop(stream);
    assert!(gw.metrics_show("stockgate_in_flight_requests 0").await);
    let again = gw
        .http
        .get(gw.url("/api/v1/stock/HOT"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_blocks_are_refused_on_http2() {
    // The shipped limits (the test configuration allows larger headers).
    let (gw, dir, ca, addr) = tls_gateway_with(|c| c.limits = LimitsConfig::default()).await;
    let limit = gw.state.limits.max_header_bytes;
    // Headers too long for one command-line argument go through a file (`-H @file`).
    let header_file = |name: &str, header: String| {
        let path = dir.root.join(name);
        std::fs::write(&path, header).unwrap();
        format!("@{}", path.display())
    };

    // Over `limits.max_header_bytes` but within the codec's list limit: the edge's 431
    // problem, as on HTTP/1.1.
    let big = header_file("big", format!("x-big: {}", "a".repeat(limit + 100)));
    let (version, status, text) =
        curl(&ca, addr, &["--http2", "-H", &big], "/api/v1/stock/HOT").await;
    assert_eq!((version.as_str(), status), ("2", 431), "{text}");
    assert!(text.contains("headers_too_large"), "{text}");

    // More headers than `limits.max_header_count`: the same.
    let many: Vec<String> = (0..80).map(|i| format!("x-h{i}: v")).collect();
    let mut args = vec!["--http2"];
    for header in &many {
        args.extend(["-H", header.as_str()]);
    }
    let (_, status, text) = curl(&ca, addr, &args, "/api/v1/stock/HOT").await;
    assert_eq!(status, 431, "{text}");
    assert!(text.contains("headers_too_large"), "{text}");

    // Past the codec's limit: the HTTP/2 codec answers 431 itself and resets the stream
    // (`REFUSED_STREAM`) before the header block becomes a request.
    let limit = gateway::server::header_list_limit(&LimitsConfig::default());
    let huge = header_file(
        "huge",
        format!("x-huge: {}", "a".repeat(limit as usize + 1000)),
    );
    let (_, status, text) = curl(&ca, addr, &["--http2", "-H", &huge], "/api/v1/stock/HOT").await;
    assert_eq!(status, 431, "{text}");
    assert!(
        !text.contains("headers_too_large"),
        "the codec answered, not the edge: {text}"
    );

    // The listener still serves afterwards.
    let (_, status, text) = curl(&ca, addr, &["--http2"], "/api/v1/stock/HOT").await;
    assert_eq!(status, 200, "{text}");
}

/// HPACK's integer with a 7-bit prefix (RFC 7541 §5.1), as a string length.
fn hpack_length(len: usize, out: &mut Vec<u8>) {
    if len < 127 {
        out.push(len as u8);
        return;
    }
    out.push(127);
    let mut rest = len - 127;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_block_far_past_the_limit_in_continuation_frames_gets_goaway() {
    let ca = TestCa::new("stockgate tls test CA");
    let dir = CertDir::new(&ca.issue(&["localhost"]));
    let gw = testkit::start_gateway_with(|c| {
        serve_tls(c, &dir);
        c.limits = LimitsConfig::default();
    })
    .await;
    let addr = gw.server.as_ref().and_then(|s| s.tls_addr).unwrap();
    let mut stream = connect(addr, &ca.ca_pem(), &[b"h2"]).await;
    h2_handshake(&mut stream, &[]).await;

    // One request whose block is four times the announced header-list limit, sent as
    // HEADERS and CONTINUATION frames of the default 16 KiB frame size.
    let limit = gateway::server::header_list_limit(&LimitsConfig::default()) as usize;
    let mut block = get_request("/api/v1/stock/HOT");
    block.push(0x00); // literal without indexing, new name
    hpack_length(7, &mut block);
    block.extend(b"x-flood");
    hpack_length(4 * limit, &mut block);
    block.extend(std::iter::repeat_n(b'a', 4 * limit));
    let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
    let mut frames = Vec::new();
    for (n, chunk) in chunks.iter().enumerate() {
        let (kind, flags) = if n == 0 {
            (HEADERS, 0x1)
        } else {
            (CONTINUATION, 0)
        };
        let flags = if n + 1 == chunks.len() {
            flags | 0x4
        } else {
            flags
        };
        frames.extend(frame(kind, flags, 1, chunk));
    }
    let _ = stream.write_all(&frames).await;
    let goaway = read_until(&mut stream, GOAWAY, 0).await.expect("a GOAWAY");
    let code = u32::from_be_bytes([goaway[4], goaway[5], goaway[6], goaway[7]]);
    // Too many CONTINUATION frames for the limit (ENHANCE_YOUR_CALM), or the block past what
    // the codec ignores (COMPRESSION_ERROR), whichever the codec meets first.
    assert!(
        code == ENHANCE_YOUR_CALM || code == COMPRESSION_ERROR,
        "GOAWAY code {code:#x}"
    );
}

/// The leaf certificate the listener serves now.
async fn served_leaf(addr: SocketAddr, ca_pem: &str) -> Vec<u8> {
    let stream = connect(addr, ca_pem, &[b"http/1.1"]).await;
    let certs = stream.get_ref().1.peer_certificates().unwrap();
    certs[0].as_ref().to_vec()
}

fn leaf_der(cert: &ServerCert) -> Vec<u8> {
    CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

async fn wait_served(addr: SocketAddr, ca_pem: &str, want: &[u8]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if served_leaf(addr, ca_pem).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_bad_one_is_not() {
    let ca = TestCa::new("stockgate tls test CA");
    let first = ca.issue(&["localhost"]);
    let mut dir = CertDir::new(&first);
    let gw = testkit::start_gateway_with(|c| serve_tls(c, &dir)).await;
    let addr = gw.server.as_ref().and_then(|s| s.tls_addr).unwrap();
    let ca_pem = ca.ca_pem();
    assert_eq!(served_leaf(addr, &ca_pem).await, leaf_der(&first));

    // Renewal as the CSI driver does it: a new directory, `..data` renamed over.
    let renewed = ca.issue(&["localhost"]);
    dir.publish(&renewed.cert_pem, &renewed.key_pem);
    assert!(
        wait_served(addr, &ca_pem, &leaf_der(&renewed)).await,
        "renewed certificate not served"
    );
    assert!(gw.metrics_show("stockgate_tls_cert_reloads_total 1").await);

    // A certificate whose key is another's: refused, counted, the renewed pair stays.
    let other = ca.issue(&["localhost"]);
    dir.publish(&other.cert_pem, &renewed.key_pem);
    assert!(
        gw.metrics_show("stockgate_tls_cert_reload_errors_total 1")
            .await
    );
    assert_eq!(served_leaf(addr, &ca_pem).await, leaf_der(&renewed));

    // The matching key arrives: that pair is served.
    dir.publish(&other.cert_pem, &other.key_pem);
    assert!(wait_served(addr, &ca_pem, &leaf_der(&other)).await);
    assert!(gw.metrics_show("stockgate_tls_cert_reloads_total 2").await);

    // An expired pair (a writer that put back an old version): refused, the current stays.
    let expired = ca.issue_expired(&["localhost"]);
    dir.publish(&expired.cert_pem, &expired.key_pem);
    assert!(
        gw.metrics_show("stockgate_tls_cert_reload_errors_total 2")
            .await
    );
    assert_eq!(served_leaf(addr, &ca_pem).await, leaf_der(&other));
    // The served certificate's expiry is exported (rcgen's default notAfter is 4096-01-01).
    assert!(
        gw.metrics_show("stockgate_tls_cert_not_after_seconds 67090118400")
            .await
    );

    // A pre-staged pair (notBefore in 2100) is refused at every look, not once: it is served
    // as soon as it is valid. Two more looks count two more errors.
    let early = ca.issue_not_yet_valid(&["localhost"]);
    dir.publish(&early.cert_pem, &early.key_pem);
    assert!(
        gw.metrics_show("stockgate_tls_cert_reload_errors_total 4")
            .await
    );
    assert_eq!(served_leaf(addr, &ca_pem).await, leaf_der(&other));
}

#[test]
fn the_tls_section_names_the_missing_field() {
    let mut config = Config::default();
    config.server.tls.listen = Some("127.0.0.1:8443".into());
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("server.tls.cert_file"), "{error}");

    let mut config = Config::default();
    config.server.tls.cert_file = Some("tls.crt".into());
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("server.tls.listen"), "{error}");

    let mut config = Config::default();
    config.server.http2.max_concurrent_streams = 0;
    let error = config.validate().unwrap_err().to_string();
    assert!(
        error.contains("server.http2.max_concurrent_streams"),
        "{error}"
    );
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused_at_load() {
    gateway::server::install_crypto_provider();
    let ca = TestCa::new("stockgate tls test CA");
    let (a, b) = (ca.issue(&["localhost"]), ca.issue(&["localhost"]));
    let dir = CertDir::new(&ServerCert {
        cert_pem: a.cert_pem.clone(),
        key_pem: b.key_pem.clone(),
    });
    let error = gateway::server::load_pair(&dir.cert(), &dir.key())
        .unwrap_err()
        .to_string();
    assert!(error.contains("does not belong"), "{error}");
    let error = gateway::server::load_pair(&dir.key(), &dir.key())
        .unwrap_err()
        .to_string();
    assert!(error.contains("no PEM certificate"), "{error}");
    drop(dir);
    let expired = CertDir::new(&ca.issue_expired(&["localhost"]));
    let error = gateway::server::load_pair(&expired.cert(), &expired.key())
        .unwrap_err()
        .to_string();
    assert!(error.contains("expired on"), "{error}");
    drop(expired);
    let early = CertDir::new(&ca.issue_not_yet_valid(&["localhost"]));
    let error = gateway::server::load_pair(&early.cert(), &early.key())
        .unwrap_err()
        .to_string();
    assert!(error.contains("valid from"), "{error}");
    drop(early);
    let garbage = CertDir::new(&ServerCert {
        cert_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
        key_pem: a.key_pem.clone(),
    });
    let error = gateway::server::load_pair(&garbage.cert(), &garbage.key())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot be used"),
        "a garbage certificate is not a key mismatch: {error}"
    );
    drop(garbage);
    let dir = CertDir::new(&a);
    assert!(gateway::server::load_pair(&dir.cert(), &dir.key()).is_ok());
    // One PEM holding the key and the chain (a Key Vault certificate read as a secret) serves
    // as both files.
    let bundle = dir.root.join("bundle.pem");
    std::fs::write(&bundle, format!("{}{}", a.key_pem, a.cert_pem)).unwrap();
    assert!(gateway::server::load_pair(&bundle, &bundle).is_ok());
}

/// Whether the server closes the connection within `wait` (frames it sends meanwhile, such
/// as its SETTINGS or a GOAWAY, are read and dropped).
async fn closed_within(stream: &mut TlsStream<TcpStream>, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_trickling_http2_connections_are_closed_after_the_idle_timeout() {
    let ca = TestCa::new("stockgate tls test CA");
    let dir = CertDir::new(&ca.issue(&["localhost"]));
    let gw = testkit::start_gateway_with(|c| {
        serve_tls(c, &dir);
        c.limits.idle_timeout_secs = 1;
        // Past the idle timeout: the first-request deadline is tested on its own above.
        c.limits.header_read_timeout_ms = 10_000;
    })
    .await;
    let addr = gw.server.as_ref().and_then(|s| s.tls_addr).unwrap();

    // A connection that never opens a stream.
    let mut idle = connect(addr, &ca.ca_pem(), &[b"h2"]).await;
    idle.write_all(PREFACE).await.unwrap();
    idle.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut idle, Duration::from_secs(4)).await,
        "idle connection kept"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A header block that never ends (HEADERS without END_HEADERS, no CONTINUATION): no
    // stream is accepted, so the connection counts as idle.
    let mut trickle = connect(addr, &ca.ca_pem(), &[b"h2"]).await;
    trickle.write_all(PREFACE).await.unwrap();
    trickle
        .write_all(&frame(SETTINGS, 0, 0, &[]))
        .await
        .unwrap();
    let block = get_request("/api/v1/stock/HOT");
    trickle
        .write_all(&frame(HEADERS, 0x1, 1, &block))
        .await
        .unwrap();
    assert!(
        closed_within(&mut trickle, Duration::from_secs(4)).await,
        "trickling connection kept"
    );
}
