//! One connection type for every Redis deployment stockgate runs on: a single server (local,
//! compose) or a Redis Cluster (Azure Managed Redis), plain or TLS. [`RedisConnection`] is
//! multiplexed and cheap to clone in both cases: clone it per task, never lock it.
//!
//! The URL names the deployment:
//!
//! ```text
//! redis://host:6379                         one server
//! rediss://host:6380                        one server over TLS, certificate checked
//! redis+cluster://h1:7001,h2:7002           Redis Cluster, seed nodes (one is enough)
//! rediss+cluster://h1:10000                 Redis Cluster over TLS (Azure Managed Redis)
//! redis://h1:7001?cluster=true              the same as redis+cluster://h1:7001
//! rediss://host:6380?ca_file=/etc/redis/ca.pem   trust this CA (PEM) instead of the system roots
//! redis+unix:///run/redis.sock              a Unix socket (handed to redis-rs as it is)
//! ```
//!
//! User and password (`rediss://:secret@host:6380`) and other query options pass through to
//! every node. TLS always verifies the server certificate and its host name: against the
//! system's roots, or only against the PEM bundle in `ca_file` when that is set.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, TlsCertificates, Value,
};

/// Where a URL points: the node URLs handed to redis-rs, and our own options taken out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// One `redis://` or `rediss://` URL per node (one for a single server).
    pub nodes: Vec<String>,
    pub cluster: bool,
    pub tls: bool,
    /// PEM file of the CA(s) to trust for TLS instead of the system roots.
    pub ca_file: Option<PathBuf>,
}

fn config_error(reason: &'static str, detail: String) -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, reason, detail))
}

impl RedisTarget {
    /// Parses the URL forms listed in the module doc.
    pub fn parse(url: &str) -> RedisResult<Self> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| config_error("redis url has no scheme", url_shape(url)))?;
        if matches!(scheme, "redis+unix" | "unix") {
            return Ok(RedisTarget {
                nodes: vec![url.to_owned()],
                cluster: false,
                tls: false,
                ca_file: None,
            });
        }
        let (tls, mut cluster) = match scheme {
            "redis" => (false, false),
            "rediss" => (true, false),
            "redis+cluster" => (false, true),
            "rediss+cluster" => (true, true),
            _ => {
                return Err(config_error(
                    "redis url scheme must be redis, rediss, redis+cluster, rediss+cluster or redis+unix",
                    scheme.to_owned(),
                ));
            }
        };
        let (before_query, query) = match rest.split_once('?') {
            Some((before, query)) => (before, Some(query)),
            None => (rest, None),
        };
        let mut ca_file = None;
        let mut kept = Vec::new();
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("cluster", "true" | "1") => cluster = true,
                ("cluster", "false" | "0") => {}
                ("cluster", other) => {
                    return Err(config_error(
                        "redis url option cluster must be true or false",
                        other.to_owned(),
                    ));
                }
                ("ca_file", path) if !path.is_empty() => ca_file = Some(PathBuf::from(path)),
                ("", "") => {}
                _ => kept.push(pair),
            }
        }
        if ca_file.is_some() && !tls {
            return Err(config_error(
                "redis url option ca_file needs a rediss:// url",
                url_shape(url),
            ));
        }
        let (authority, path) = match before_query.find('/') {
            Some(i) => before_query.split_at(i),
            None => (before_query, ""),
        };
        // The password may contain ',' or '@': the hosts are what follows the last '@'.
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((user, hosts)) => (format!("{user}@"), hosts),
            None => (String::new(), authority),
        };
        let base = if tls { "rediss" } else { "redis" };
        let query = if kept.is_empty() {
            String::new()
        } else {
            format!("?{}", kept.join("&"))
        };
        let nodes: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|host| format!("{base}://{userinfo}{host}{path}{query}"))
            .collect();
        if nodes.is_empty() {
            return Err(config_error("redis url names no host", url_shape(url)));
        }
        if nodes.len() > 1 && !cluster {
            return Err(config_error(
                "a redis url with several hosts must be redis+cluster:// or rediss+cluster://",
                url_shape(url),
            ));
        }
        Ok(RedisTarget {
            nodes,
            cluster,
            tls,
            ca_file,
        })
    }
}

/// The URL with any password hidden, for error messages.
fn url_shape(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &url[at..]),
        _ => url.to_owned(),
    }
}

/// Timeouts and retries of a connection. `None` keeps redis-rs' default.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Longest wait for one reply (do not set it for connections that `XREAD ... BLOCK`).
    pub response_timeout: Option<Duration>,
    /// Longest wait for a (re)connect.
    pub connect_timeout: Option<Duration>,
    /// Reconnect attempts before a call fails.
    pub retries: Option<usize>,
}

/// A multiplexed connection to one Redis server or to a Redis Cluster. Commands and pipelines
/// go through [`ConnectionLike`], so `query_async`, `Script::invoke_async` and
/// `AsyncCommands` work on both; on a cluster each command goes to the node owning its key's
/// slot (redis-rs follows `MOVED`/`ASK` and refreshes the slot map), and a pipeline must stay
/// within one slot.
#[derive(Clone)]
pub enum RedisConnection {
    /// A reconnecting connection to one server.
    Single(ConnectionManager),
    /// A Redis Cluster connection (one multiplexed connection per node).
    Cluster(ClusterConnection),
}

impl From<ConnectionManager> for RedisConnection {
    fn from(conn: ConnectionManager) -> Self {
        RedisConnection::Single(conn)
    }
}

impl From<ClusterConnection> for RedisConnection {
    fn from(conn: ClusterConnection) -> Self {
        RedisConnection::Cluster(conn)
    }
}

impl RedisConnection {
    /// Connects to the deployment `url` names (forms in the module doc).
    pub async fn connect(url: &str, options: &ConnectOptions) -> RedisResult<Self> {
        let target = RedisTarget::parse(url)?;
        let certificates = match &target.ca_file {
            Some(path) => Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|e| {
                    config_error(
                        "cannot read the redis ca_file",
                        format!("{}: {e}", path.display()),
                    )
                })?),
            }),
            None => None,
        };
        if target.tls {
            // redis-rs builds rustls without a crypto provider; name ours once per process
            // (a second call finds it installed and changes nothing).
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let connected = if target.cluster {
            connect_cluster(&target, certificates, options).await
        } else {
            connect_single(&target, certificates, options).await
        };
        connected.map_err(|err| explain(err, &target))
    }

    /// Whether this is a Redis Cluster connection (pipelines must then stay in one slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConnection::Cluster(_))
    }
}

async fn connect_single(
    target: &RedisTarget,
    certificates: Option<TlsCertificates>,
    options: &ConnectOptions,
) -> RedisResult<RedisConnection> {
    let url = target.nodes[0].as_str();
    let client = match certificates {
        Some(certs) => redis::Client::build_with_tls(url, certs)?,
        None => redis::Client::open(url)?,
    };
    let mut config = ConnectionManagerConfig::new();
    if let Some(timeout) = options.response_timeout {
        config = config.set_response_timeout(Some(timeout));
    }
    if let Some(timeout) = options.connect_timeout {
        config = config.set_connection_timeout(Some(timeout));
    }
    if let Some(retries) = options.retries {
        config = config
            .set_number_of_retries(retries)
            .set_max_delay(Duration::from_millis(200));
    }
    Ok(ConnectionManager::new_with_config(client, config)
        .await?
        .into())
}

async fn connect_cluster(
    target: &RedisTarget,
    certificates: Option<TlsCertificates>,
    options: &ConnectOptions,
) -> RedisResult<RedisConnection> {
    let mut builder = ClusterClientBuilder::new(target.nodes.clone());
    if let Some(certs) = certificates {
        builder = builder.certs(certs);
    }
    if let Some(timeout) = options.response_timeout {
        // Per node, and for a whole call including redirects and retries.
        builder = builder
            .response_timeout(timeout)
            .overall_response_timeout(Some(timeout.saturating_mul(4)));
    }
    if let Some(timeout) = options.connect_timeout {
        builder = builder.connection_timeout(timeout);
    }
    if let Some(retries) = options.retries {
        builder = builder
            .retries(u32::try_from(retries).unwrap_or(u32::MAX))
            .max_retry_wait(200);
    }
    Ok(builder.build()?.get_async_connection().await?.into())
}

/// Names the likely cause of a failed certificate check: rustls' own message ("invalid peer
/// certificate: UnknownIssuer") does not say which setting to change.
fn explain(err: RedisError, target: &RedisTarget) -> RedisError {
    if !target.tls || !err.to_string().contains("certificate") {
        return err;
    }
    let trust = match &target.ca_file {
        Some(path) => format!("the CA in ca_file {}", path.display()),
        None => "the system roots (set ?ca_file=/path/ca.pem to trust a private CA)".to_owned(),
    };
    RedisError::from((
        err.kind(),
        "redis TLS connection failed",
        format!(
            "{err}; the server certificate must be issued for the host name and signed by {trust}"
        ),
    ))
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(conn) => conn.req_packed_command(cmd),
            RedisConnection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(conn) => conn.get_db(),
            RedisConnection::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> RedisTarget {
        RedisTarget::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn refused(url: &str) -> String {
        match RedisTarget::parse(url) {
            Ok(t) => panic!("{url} was accepted: {t:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_plain_url_is_one_node() {
        let t = parse("redis://127.0.0.1:6379/0");
        assert_eq!(t.nodes, ["redis://127.0.0.1:6379/0"]);
        assert!(!t.cluster && !t.tls && t.ca_file.is_none());
    }

    #[test]
    fn a_cluster_url_lists_every_seed_with_credentials() {
        let t = parse("rediss+cluster://user:p%40ss@h1:7001,h2:7002?protocol=resp3");
        assert_eq!(
            t.nodes,
            [
                "rediss://user:p%40ss@h1:7001?protocol=resp3",
                "rediss://user:p%40ss@h2:7002?protocol=resp3"
            ]
        );
        assert!(t.cluster && t.tls);
    }

    #[test]
    fn cluster_and_ca_file_options_are_taken_out() {
        let t = parse("rediss://h1:6380?cluster=true&ca_file=/etc/ca.pem");
        assert_eq!(t.nodes, ["rediss://h1:6380"]);
        assert!(t.cluster && t.tls);
        assert_eq!(t.ca_file, Some(PathBuf::from("/etc/ca.pem")));
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        assert!(refused("http://h:1").contains("scheme must be"));
        assert_eq!(
            parse("redis+unix:///run/redis.sock").nodes,
            ["redis+unix:///run/redis.sock"]
        );
        assert!(refused("redis://h1:1,h2:2").contains("several hosts"));
        assert!(refused("redis://h:1?ca_file=/ca.pem").contains("needs a rediss://"));
        assert!(refused("redis://h:1?cluster=maybe").contains("true or false"));
        assert!(refused("redis+cluster://").contains("names no host"));
        assert!(!refused("redis://:secret@h1:1,h2:2").contains("secret"));
    }
}
