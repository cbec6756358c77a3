//! `rediss://` with certificate checks, against a TLS-only redis-server this test starts on a
//! spare loopback port with a throwaway CA (made with the `openssl` command line): the store
//! connects and works with `?ca_file=` naming the CA, and is refused with an error that names
//! the fix without it. A missing `redis-server` or `openssl` fails the test loudly.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend_adapters::redis::{RedisStore, RedisStoreConfig};
use reservation_core::testsuite::{buyer, qty, sku, stock};
use reservation_core::{IdempotencyKey, ReservationStore, ReserveRequest};

/// A TLS-only redis-server and its CA, gone when dropped.
struct TlsRedis {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and localhost signed by it, and redis-server
/// listening only on TLS.
fn start_tls_redis() -> TlsRedis {
    let dir = std::env::temp_dir().join(format!("sg-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("temp dir: {e}"));
    let days = ["-days", "2"];
    run(
        &dir,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=stockgate test CA",
            days[0],
            days[1],
        ],
    );
    run(
        &dir,
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap_or_else(|e| panic!("san.ext: {e}"));
    run(
        &dir,
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-extfile",
            "san.ext",
            days[0],
            days[1],
        ],
    );

    // A spare port: bind, read it, let go (redis-server takes it right after).
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("spare port: {e}"))
        .port();
    let port_arg = port.to_string();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port_arg,
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(&dir)
        .current_dir(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start redis-server (is it installed?): {e}"));
    let server = TlsRedis { child, dir, port };
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "TLS redis-server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

fn config() -> RedisStoreConfig {
    RedisStoreConfig {
        prefix: "tls".to_owned(),
        connect_timeout: Duration::from_secs(2),
        ..RedisStoreConfig::default()
    }
}

#[tokio::test]
async fn rediss_with_the_test_ca_checks_the_certificate_and_works() {
    let server = start_tls_redis();
    let url = format!(
        "rediss://127.0.0.1:{}?ca_file={}",
        server.port,
        server.dir.join("ca.pem").display()
    );
    let store = RedisStore::connect(&url, config())
        .await
        .unwrap_or_else(|e| panic!("connect over TLS with the CA: {e}"));
    assert!(
        store
            .scripts_loaded()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    store
        .configure_product(&sku("TLS"), &stock(3, 3, 3))
        .await
        .unwrap_or_else(|e| panic!("configure: {e}"));
    let r = store
        .reserve(&ReserveRequest {
            sku: sku("TLS"),
            buyer: buyer("alice"),
            qty: qty(2),
            idempotency_key: IdempotencyKey::parse("k").unwrap_or_else(|e| panic!("{e}")),
            hold_ttl_ms: 60_000,
        })
        .await
        .unwrap_or_else(|e| panic!("reserve over TLS: {e}"));
    assert_eq!(r.hold.qty.get(), 2);
    let s = store
        .snapshot(&sku("TLS"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.available, s.held), (1, 2));
}

#[tokio::test]
async fn rediss_without_the_ca_is_refused_with_a_clear_error() {
    let server = start_tls_redis();
    let url = format!("rediss://127.0.0.1:{}", server.port);
    let message = match RedisStore::connect(&url, config()).await {
        Ok(_) => panic!("a certificate from an unknown CA was accepted"),
        Err(e) => e.to_string(),
    };
    println!("without the CA: {message}");
    assert!(
        message.contains("redis TLS connection failed") && message.contains("ca_file"),
        "{message}"
    );
    assert!(
        message.contains("UnknownIssuer") || message.contains("certificate"),
        "{message}"
    );
}

#[tokio::test]
async fn plain_redis_url_to_a_tls_port_is_refused() {
    let server = start_tls_redis();
    let url = format!("redis://127.0.0.1:{}", server.port);
    let result = RedisStore::connect(&url, config()).await;
    assert!(
        result.is_err(),
        "a plain connection to a TLS-only port succeeded"
    );
}
