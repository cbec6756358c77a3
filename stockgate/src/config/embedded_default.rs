//! The one place that decides whether this process is the embedded default (the local demo
//! `stockgate all-in-one` with nothing configured) and so whether it serves the dev sign-in,
//! `POST /dev/token`, which mints ops tokens for anyone who asks.

use std::net::SocketAddr;

use gateway::config::DevSignIn;

use super::Config;

impl Config {
    /// The fully embedded default: no configuration file, the in-memory store, SQLite in
    /// `data_dir`, the dev identity, generated reservation keys, and public and admin
    /// listeners on loopback. Anything a deployment sets, from a file or from a `STOCKGATE_*`
    /// variable (a Redis or database URL, a non-loopback listener, an identity provider, key
    /// files), makes the process production-shaped. `data_dir` does not count: the container
    /// image sets it, and the image turns the dev sign-in off explicitly.
    pub fn is_embedded_default(&self) -> bool {
        let edge = &self.gateway;
        self.file.is_none()
            && edge.redis_url.is_none()
            && self.database_url.is_none()
            && !edge.auth.has_identity_provider()
            && edge.reservations.signing_key_file.is_none()
            && edge.reservations.public_jwks_file.is_none()
            && edge.settlement_auth.signing_key_file.is_none()
            && edge.settlement_auth.gateway_jwks_file.is_none()
            && is_loopback(&edge.server.listen)
            && is_loopback(&edge.server.admin_listen)
            // An HTTPS listener reachable from elsewhere is a deployment, not the local demo.
            && edge.server.tls.listen.as_deref().is_none_or(is_loopback)
    }

    /// Whether a process serves `POST /dev/token`. `all_in_one`: it is `stockgate
    /// all-in-one` (the only command that can be the embedded default). An explicit
    /// `web.dev_token` (file or `STOCKGATE_DEV_TOKEN`) wins either way.
    pub fn dev_sign_in(&self, all_in_one: bool) -> DevSignIn {
        match self.gateway.web.dev_token {
            Some(true) => DevSignIn::Explicit,
            Some(false) => DevSignIn::Off,
            None if all_in_one && self.is_embedded_default() => DevSignIn::EmbeddedDefault,
            None => DevSignIn::Off,
        }
    }
}

/// `host:port` whose host is a loopback address (an unparsable one is not).
fn is_loopback(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|addr| addr.ip().is_loopback())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The configuration `stockgate all-in-one` gets with no file and `env`.
    fn all_in_one_with(env: &[(&str, &str)]) -> DevSignIn {
        let env: HashMap<&str, &str> = env.iter().copied().collect();
        let config = Config::load_with(None, |name| env.get(name).map(|v| v.to_string()))
            .unwrap_or_else(|e| panic!("{env:?}: {e}"));
        config.dev_sign_in(true)
    }

    #[test]
    fn only_the_fully_embedded_default_serves_the_dev_sign_in() {
        assert_eq!(all_in_one_with(&[]), DevSignIn::EmbeddedDefault);
        // The container image sets its data dir: that alone is still the local demo.
        let data_dir = ("STOCKGATE_DATA_DIR", "/var/lib/stockgate");
        assert_eq!(all_in_one_with(&[data_dir]), DevSignIn::EmbeddedDefault);
        for production in [
            ("STOCKGATE_REDIS_URL", "redis://redis:6379"),
            ("STOCKGATE_DATABASE_URL", "postgres://db/stockgate"),
            ("STOCKGATE_LISTEN", "0.0.0.0:8080"),
            ("STOCKGATE_LISTEN", "10.0.0.5:8080"),
            ("STOCKGATE_ADMIN_LISTEN", "0.0.0.0:9090"),
            ("STOCKGATE_JWKS_FILE", "/keys/idp.json"),
            ("STOCKGATE_JWKS_URL", "https://idp/jwks.json"),
            ("STOCKGATE_RESERVATION_KEY_FILE", "/keys/rsv.pem"),
            ("STOCKGATE_RESERVATION_JWKS_FILE", "/keys/rsv.json"),
            ("STOCKGATE_ASSERTION_KEY_FILE", "/keys/gw.pem"),
            ("STOCKGATE_GATEWAY_JWKS_FILE", "/keys/gw.json"),
            // The image's own default (deploy/Dockerfile).
            ("STOCKGATE_DEV_TOKEN", "0"),
            ("STOCKGATE_DEV_TOKEN", "yes"),
        ] {
            assert_eq!(
                all_in_one_with(&[data_dir, production]),
                DevSignIn::Off,
                "{production:?}"
            );
        }
        // An HTTPS listener: on loopback still the local demo, elsewhere a deployment.
        let cert = ("STOCKGATE_TLS_CERT_FILE", "/tls/tls.crt");
        let key = ("STOCKGATE_TLS_KEY_FILE", "/tls/tls.key");
        let local = ("STOCKGATE_TLS_LISTEN", "127.0.0.1:8443");
        assert_eq!(
            all_in_one_with(&[local, cert, key]),
            DevSignIn::EmbeddedDefault
        );
        let public = ("STOCKGATE_TLS_LISTEN", "0.0.0.0:8443");
        assert_eq!(all_in_one_with(&[public, cert, key]), DevSignIn::Off);
        // A configuration file decides for itself, off unless it says `dev_token = true`.
        let file = Config {
            file: Some("stockgate.toml".into()),
            ..Config::default()
        };
        assert_eq!(file.dev_sign_in(true), DevSignIn::Off);
        // Only `all-in-one` can be the embedded default.
        assert_eq!(Config::default().dev_sign_in(false), DevSignIn::Off);
    }

    #[test]
    fn the_explicit_switch_wins_anywhere() {
        let on = ("STOCKGATE_DEV_TOKEN", "1");
        assert_eq!(all_in_one_with(&[on]), DevSignIn::Explicit);
        let redis = ("STOCKGATE_REDIS_URL", "redis://redis:6379");
        assert_eq!(all_in_one_with(&[on, redis]), DevSignIn::Explicit);
        let mut config = Config::default();
        config.gateway.web.dev_token = Some(true);
        config.gateway.server.listen = "0.0.0.0:8080".into();
        assert_eq!(config.dev_sign_in(false), DevSignIn::Explicit);
        assert_eq!(config.gateway.explicit_dev_sign_in(), DevSignIn::Explicit);
    }
}
