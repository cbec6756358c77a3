//! `h2load-reserve`: POST /api/v1/reservations over TLS + HTTP/2 from C connections with S
//! streams each for D seconds, every request with its own Idempotency-Key and the next buyer
//! token; prints the bench's `STATUS` and `RESULT` lines (as loadtests/helpers/wrk_common.lua
//! does), so `loadtests/bench` reads both tools alike.
//!
//!   h2load-reserve URL SKU TOKENS_FILE CA_FILE RUN_ID CONNECTIONS STREAMS SECONDS

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Load {
    uri: http::Uri,
    addr: SocketAddr,
    body: Bytes,
    tokens: Vec<String>,
    run: String,
    until: Instant,
}

/// What one stream saw: statuses, latencies (µs), failed requests.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    latencies: Vec<u32>,
    errors: u64,
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, sku, tokens, ca, run, conns, streams, secs] = args.as_slice() else {
        return Err(
            "usage: h2load-reserve URL SKU TOKENS_FILE CA_FILE RUN_ID CONNECTIONS STREAMS SECONDS"
                .into(),
        );
    };
    let uri: http::Uri = url.parse()?;
    let authority = uri.authority().ok_or("URL without host")?.clone();
    let addr: SocketAddr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(443)
    )
    .parse()?;
    let (conns, streams, secs): (usize, usize, u64) =
        (conns.parse()?, streams.parse()?, secs.parse()?);
    let tokens: Vec<String> = std::fs::read_to_string(tokens)?
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        return Err("no tokens".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let server_name = ServerName::try_from(authority.host().to_owned())?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let started = Instant::now();
        let load = Arc::new(Load {
            uri,
            addr,
            body: Bytes::from(format!(r#"{{"sku":"{sku}","qty":1}}"#)),
            tokens,
            run: run.clone(),
            until: started + Duration::from_secs(secs),
        });
        let mut tasks = Vec::new();
        for c in 0..conns {
            let tcp = TcpStream::connect(load.addr).await?;
            tcp.set_nodelay(true)?;
            let stream = connector.connect(server_name.clone(), tcp).await?;
            let (sender, connection) = h2::client::handshake(stream).await?;
            tokio::spawn(connection);
            for s in 0..streams {
                tasks.push(tokio::spawn(stream_loop(
                    load.clone(),
                    sender.clone(),
                    c * streams + s,
                )));
            }
        }
        let mut total = Tally::default();
        for task in tasks {
            let tally = task.await?;
            for (status, n) in tally.statuses {
                *total.statuses.entry(status).or_default() += n;
            }
            total.latencies.extend(tally.latencies);
            total.errors += tally.errors;
        }
        report(total, started.elapsed());
        Ok::<(), Error>(())
    })
}

/// One stream slot: a request at a time until the deadline.
async fn stream_loop(
    load: Arc<Load>,
    sender: h2::client::SendRequest<Bytes>,
    slot: usize,
) -> Tally {
    let mut tally = Tally::default();
    let mut n = slot * 1_000_003;
    while Instant::now() < load.until {
        n += 1;
        let token = &load.tokens[n % load.tokens.len()];
        let sent = Instant::now();
        match reserve(
            &load,
            sender.clone(),
            token,
            &format!("{}-{slot}-{n}", load.run),
        )
        .await
        {
            Ok(status) => {
                *tally.statuses.entry(status).or_default() += 1;
                tally
                    .latencies
                    .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Err(_) => {
                tally.errors += 1;
                // A refused or reset connection: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally
}

async fn reserve(
    load: &Load,
    sender: h2::client::SendRequest<Bytes>,
    token: &str,
    key: &str,
) -> Result<u16, Error> {
    let mut sender = sender.ready().await?;
    let request = http::Request::post(load.uri.clone())
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(())?;
    let (response, mut body) = sender.send_request(request, false)?;
    body.send_data(load.body.clone(), true)?;
    let response = response.await?;
    let status = response.status().as_u16();
    let mut data = response.into_body();
    while let Some(chunk) = data.data().await {
        let chunk = chunk?;
        let _ = data.flow_control().release_capacity(chunk.len());
    }
    Ok(status)
}

fn report(mut total: Tally, elapsed: Duration) {
    total.latencies.sort_unstable();
    let at = |p: f64| -> f64 {
        if total.latencies.is_empty() {
            return 0.0;
        }
        let i = ((total.latencies.len() as f64 * p) as usize).min(total.latencies.len() - 1);
        f64::from(total.latencies[i]) / 1000.0
    };
    let requests: u64 = total.statuses.values().sum();
    let secs = elapsed.as_secs_f64();
    let statuses: Vec<String> = total
        .statuses
        .iter()
        .map(|(s, n)| format!("{s}={n}"))
        .collect();
    println!("STATUS {}", statuses.join(" "));
    println!(
        "RESULT requests={requests} seconds={secs:.3} rps={:.1} p50_ms={:.3} p99_ms={:.3} created_per_s={:.1} errors={}",
        requests as f64 / secs,
        at(0.50),
        at(0.99),
        total.statuses.get(&201).copied().unwrap_or(0) as f64 / secs,
        total.errors
    );
}
