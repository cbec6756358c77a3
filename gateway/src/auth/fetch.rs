//! The one HTTP client that fetches identity-provider documents (OpenID discovery, JWKS), with
//! everything such a fetch may do bounded, since the answer decides who is let in:
//!
//! - `https://` with rustls (ring, TLS 1.2+), the system roots plus an optional CA file;
//!   plain `http://` only to a loopback host (tests, a local provider);
//! - redirects only within the same origin (scheme, host, port), at most [`MAX_REDIRECTS`]:
//!   a redirect elsewhere could point the fetch at another host or a metadata address;
//! - a body cap per document, enforced while streaming (a larger declared length is refused
//!   before any byte is read, an endless body is cut off at the cap);
//! - deadlines: [`CONNECT_TIMEOUT`] to connect, [`TOTAL_TIMEOUT`] for the whole exchange.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use thiserror::Error;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Same-origin redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 3;

/// Why a document could not be fetched.
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("{url:?} is not an allowed identity-provider URL: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("cannot read the CA file {path}: {message}", path = .path.display())]
    CaFile { path: PathBuf, message: String },
    #[error("cannot build the https client: {0}")]
    Client(String),
    /// Connection, TLS (an untrusted certificate lands here) or protocol failure; `detail`
    /// is the whole cause chain, as reqwest's own message hides the reason.
    #[error("cannot fetch {url}: {detail}")]
    Request { url: String, detail: String },
    #[error("{url} did not answer within {secs} s", secs = TOTAL_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error(
        "{url} answered {status}: redirects to another origin, or more than {MAX_REDIRECTS}, are not followed"
    )]
    Redirect { url: String, status: u16 },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: body larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
}

impl FetchError {
    /// The label of this failure in `stockgate_jwks_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Url { .. } => "url",
            FetchError::CaFile { .. } | FetchError::Client(_) => "client",
            FetchError::Request { .. } => "request",
            FetchError::Timeout { .. } => "timeout",
            FetchError::Redirect { .. } => "redirect",
            FetchError::Status { .. } => "status",
            FetchError::TooLarge { .. } => "too_large",
        }
    }
}

/// Fetches identity-provider documents. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct Fetcher {
    http: reqwest::Client,
}

impl Fetcher {
    /// A client trusting the system roots and, when given, the certificates of `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> Result<Self, FetchError> {
        let mut roots = rustls::RootCertStore::empty();
        // A system without a readable store still works with a CA file; the errors are logged.
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "a system root certificate could not be read");
        }
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = ca_file {
            let ca_err = |message: String| FetchError::CaFile {
                path: path.to_owned(),
                message,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ca_err(format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(ca_err("holds no certificate".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| FetchError::Client(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // reqwest is built for HTTP/1.1 only: say so in ALPN.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let same_origin = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| first.origin() == attempt.url().origin());
                if same_origin && attempt.previous().len() <= MAX_REDIRECTS {
                    attempt.follow()
                } else {
                    // Handing back the 3xx answer makes `get` refuse it, naming its status.
                    attempt.stop()
                }
            }))
            .build()
            .map_err(|e| FetchError::Client(error_chain(&e)))?;
        Ok(Fetcher { http })
    }

    /// GETs `url` (checked by [`check_url`]) and returns its body of at most `limit` bytes.
    pub async fn get(&self, url: &str, limit: usize) -> Result<Vec<u8>, FetchError> {
        let parsed = check_url(url)?;
        let request_err = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout {
                    url: url.to_owned(),
                }
            } else {
                FetchError::Request {
                    url: url.to_owned(),
                    detail: error_chain(&e),
                }
            }
        };
        let mut response = self.http.get(parsed).send().await.map_err(request_err)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(FetchError::Redirect {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: url.to_owned(),
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_err)? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// An identity-provider URL: `https://`, or `http://` to a loopback host (a cleartext fetch
/// across a network would let anyone on the path swap the keys).
pub fn check_url(url: &str) -> Result<Url, FetchError> {
    let refuse = |reason| FetchError::Url {
        url: url.to_owned(),
        reason,
    };
    let parsed = Url::parse(url).map_err(|_| refuse("not a URL"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if is_loopback(&parsed) => {}
        "http" => return Err(refuse("plain http is allowed only to a loopback host")),
        _ => return Err(refuse("the scheme must be https")),
    }
    if parsed.host().is_none() {
        return Err(refuse("it has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refuse("it must not carry credentials"));
    }
    Ok(parsed)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// An error and its causes, `: `-separated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_urls_are_fetched() {
        for good in [
            "https://login.microsoftonline.com/t/v2.0/.well-known/openid-configuration",
            "http://127.0.0.1:8080/jwks.json",
            "http://[::1]:8080/jwks.json",
            "http://localhost/jwks.json",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for (bad, reason) in [
            ("http://idp.internal/jwks.json", "loopback"),
            ("http://10.0.0.1/jwks.json", "loopback"),
            ("ftp://idp/jwks.json", "https"),
            ("file:///etc/passwd", "https"),
            ("https://user:pw@idp/jwks.json", "credentials"),
            ("not a url", "not a URL"),
        ] {
            let message = check_url(bad).unwrap_err().to_string();
            assert!(message.contains(reason), "{bad}: {message}");
        }
    }
}
