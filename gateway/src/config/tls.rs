//! `[server.tls]` (the HTTPS listener: certificate and key files, re-read when they change)
//! and `[server.http2]` (the HTTP/2 limits of that listener). The cleartext `server.listen`
//! stays beside it for local use and behind an ingress that terminates TLS itself.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// The TLS listener: TLS 1.2 and 1.3 only, HTTP/2 by ALPN next to HTTP/1.1. Served only when
/// `listen` is set; then `cert_file` and `key_file` are required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// `host:port` of the HTTPS listener (port 0 picks a free port). Also `STOCKGATE_TLS_LISTEN`.
    pub listen: Option<String>,
    /// The certificate chain, PEM, leaf first. Also `STOCKGATE_TLS_CERT_FILE`.
    pub cert_file: Option<PathBuf>,
    /// The private key of the leaf, PEM (PKCS#8, PKCS#1 or SEC1). Also `STOCKGATE_TLS_KEY_FILE`.
    pub key_file: Option<PathBuf>,
    /// How often both files are read and compared with the pair being served; a changed pair
    /// that loads is served from the next handshake on, one that does not is logged and
    /// counted and the old pair stays.
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: None,
            cert_file: None,
            key_file: None,
            reload_interval_ms: 10_000,
        }
    }
}

/// The TLS listener's settings once validated: all three present.
#[derive(Debug, Clone)]
pub struct TlsListener<'a> {
    pub listen: &'a str,
    pub cert_file: &'a PathBuf,
    pub key_file: &'a PathBuf,
}

impl TlsConfig {
    /// The listener to serve, `None` when `listen` is unset.
    pub fn listener(&self) -> Option<TlsListener<'_>> {
        Some(TlsListener {
            listen: self.listen.as_deref()?,
            cert_file: self.cert_file.as_ref()?,
            key_file: self.key_file.as_ref()?,
        })
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let Some(listen) = &self.listen else {
            if self.cert_file.is_some() || self.key_file.is_some() {
                return Err(invalid(
                    "server.tls.listen",
                    "must be set when server.tls.cert_file or key_file is",
                ));
            }
            return Ok(());
        };
        super::validate::parse_addr("server.tls.listen", listen)?;
        if self.cert_file.is_none() {
            return Err(invalid(
                "server.tls.cert_file",
                "must be set when server.tls.listen is",
            ));
        }
        if self.key_file.is_none() {
            return Err(invalid(
                "server.tls.key_file",
                "must be set when server.tls.listen is",
            ));
        }
        if !(100..=3_600_000).contains(&self.reload_interval_ms) {
            return Err(invalid(
                "server.tls.reload_interval_ms",
                "must be between 100 and 3600000",
            ));
        }
        Ok(())
    }
}

/// HTTP/2 on the TLS listener. The header-list limit is not here: it follows `[limits]`
/// (`max_header_bytes` and `max_header_count`), so both protocols refuse the same requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Config {
    /// Streams one connection may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub max_concurrent_streams: u32,
    /// Request-body bytes a client may send on one stream before the gateway reads them.
    pub initial_stream_window_bytes: u32,
    /// The same, for all streams of a connection together.
    pub initial_connection_window_bytes: u32,
    /// Streams the client opened and reset before the gateway took them up; past this the
    /// connection is closed with GOAWAY `ENHANCE_YOUR_CALM` (rapid reset, CVE-2023-44487).
    pub max_pending_accept_reset_streams: usize,
    /// Streams the gateway had to reset for the client's protocol errors; past this, GOAWAY
    /// `ENHANCE_YOUR_CALM`.
    pub max_local_error_reset_streams: usize,
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            max_concurrent_streams: 100,
            initial_stream_window_bytes: 64 * 1024,
            initial_connection_window_bytes: 1024 * 1024,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 128,
        }
    }
}

/// Largest flow-control window HTTP/2 allows (RFC 9113 §6.9.1).
const MAX_WINDOW: u32 = (1 << 31) - 1;

impl Http2Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1000).contains(&self.max_concurrent_streams) {
            return Err(invalid(
                "server.http2.max_concurrent_streams",
                "must be between 1 and 1000",
            ));
        }
        // Below the protocol's initial 65535 the window shrinks after the handshake, which
        // some clients handle badly; the gateway never needs less.
        for (field, value) in [
            (
                "server.http2.initial_stream_window_bytes",
                self.initial_stream_window_bytes,
            ),
            (
                "server.http2.initial_connection_window_bytes",
                self.initial_connection_window_bytes,
            ),
        ] {
            if !(65_535..=MAX_WINDOW).contains(&value) {
                return Err(invalid(field, "must be between 65535 and 2147483647"));
            }
        }
        if !(1..=1000).contains(&self.max_pending_accept_reset_streams) {
            return Err(invalid(
                "server.http2.max_pending_accept_reset_streams",
                "must be between 1 and 1000",
            ));
        }
        if !(1..=10_000).contains(&self.max_local_error_reset_streams) {
            return Err(invalid(
                "server.http2.max_local_error_reset_streams",
                "must be between 1 and 10000",
            ));
        }
        Ok(())
    }
}
