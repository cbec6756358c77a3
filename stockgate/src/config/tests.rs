//! One fixture per validation rule, each asserting the message names the field.

use std::collections::HashMap;

use super::*;

fn error_of(toml: &str) -> String {
    let config = Config::from_toml(toml).expect("fixture parses");
    config
        .validate()
        .expect_err("fixture is invalid")
        .to_string()
}

#[test]
fn defaults_are_the_embedded_setup_and_valid() {
    let config = Config::default();
    config.validate().unwrap();
    assert_eq!(config.gateway.server.listen, "127.0.0.1:8080");
    assert_eq!(config.gateway.redis_url, None);
}

#[test]
fn the_shipped_example_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/stockgate.toml");
    let config = Config::from_file(&path).unwrap();
    config.validate().unwrap();
    // The file documents the defaults: it must say exactly what running without it does.
    assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()));
}

#[test]
fn dates_and_times_are_refused_where_strings_go() {
    for (text, path) in [
        ("redis_key_prefix = 2024-01-01\n", "redis_key_prefix"),
        ("[auth]\nissuer = 07:30:00\n", "auth.issuer"),
        (
            "[settlement.outbox]\nstream = 2024-01-01T00:00:00Z\n",
            "settlement.outbox.stream",
        ),
        (
            "[auth]\nalgorithms = [\"EdDSA\", 1979-05-27]\n",
            "auth.algorithms[1]",
        ),
    ] {
        let message = Config::from_toml(text).unwrap_err();
        assert!(
            message.starts_with(&format!("{path}: ")),
            "{text:?} → {message}"
        );
        assert!(message.contains("date or time"), "{message}");
    }
}

#[test]
fn type_errors_name_the_path_once() {
    let message = Config::from_toml("[server]\nthreads = 1.0\n").unwrap_err();
    assert!(
        message.starts_with("server.threads: invalid type"),
        "{message}"
    );
    assert!(!message.contains("\nin `"), "{message}");
    let message = Config::from_toml("[[settlement]]\nlisten_addr = \"x\"\n").unwrap_err();
    assert!(message.starts_with("settlement"), "{message}");
    assert!(!message.contains(".["), "{message}");
}

#[test]
fn unknown_fields_are_refused_with_their_name() {
    let message =
        Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
    assert!(message.contains("listen_port"), "{message}");
    let message = Config::from_toml("colour = \"blue\"\n").unwrap_err();
    assert!(message.contains("colour"), "{message}");
}

#[test]
fn each_rule_names_its_field() {
    let cases = [
        ("[server]\nlisten = \"localhost\"\n", "server.listen"),
        ("[server]\nadmin_listen = \"nope\"\n", "server.admin_listen"),
        ("[server]\nthreads = 0\n", "server.threads"),
        ("[limits]\nmax_body_bytes = 0\n", "limits.max_body_bytes"),
        (
            "[limits]\nmax_header_count = 2\n",
            "limits.max_header_count",
        ),
        (
            "[limits]\nmax_header_bytes = 10\n",
            "limits.max_header_bytes",
        ),
        (
            "[limits]\nheader_read_timeout_ms = 0\n",
            "limits.header_read_timeout_ms",
        ),
        (
            "[limits]\nidle_timeout_secs = 0\n",
            "limits.idle_timeout_secs",
        ),
        (
            "[auth]\njwks_file = \"a\"\njwks_url = \"http://b\"\n",
            "auth.jwks_url",
        ),
        ("[auth]\njwks_url = \"http://idp\"\n", "auth.jwks_url"),
        ("[auth]\nissuer = \"\"\n", "auth.issuer"),
        ("[auth]\naudience = \"\"\n", "auth.audience"),
        ("[auth]\nalgorithms = [\"HS256\"]\n", "auth.algorithms"),
        ("[auth]\nalgorithms = []\n", "auth.algorithms"),
        ("[auth]\nleeway_secs = 600\n", "auth.leeway_secs"),
        (
            "[reservations]\nhold_ttl_secs = 0\n",
            "reservations.hold_ttl_secs",
        ),
        (
            "[reservations]\nsigning_key_id = \"\"\n",
            "reservations.signing_key_id",
        ),
        (
            "[settlement_auth]\nsigning_key_id = \"\"\n",
            "settlement_auth.signing_key_id",
        ),
        (
            "[upstream]\nsettlement_addr = \"settlement\"\n",
            "upstream.settlement_addr",
        ),
        (
            "[upstream]\nsettle_timeout_ms = 0\n",
            "upstream.settle_timeout_ms",
        ),
        ("[upstream]\nmax_retries = 9\n", "upstream.max_retries"),
        (
            "[upstream]\nmax_connection_age_secs = 0\n",
            "upstream.max_connection_age_secs",
        ),
        ("redis_url = \"localhost:6379\"\n", "redis_url"),
        ("database_url = \"test\"\n", "database_url"),
        ("redis_key_prefix = \"{x}\"\n", "redis_key_prefix"),
        (
            "[settlement]\ndatabase_url = \"sqlite://x.db\"\n",
            "settlement.database_url",
        ),
        (
            "[settlement]\nredis_url = \"redis://r\"\n",
            "settlement.redis_url",
        ),
        ("[settlement.group_commit]\nmax_batch = 0\n", "settlement"),
        ("[cache]\nttl_secs = 0\n", "cache.ttl_secs"),
        ("[cache]\njitter_percent = 101\n", "cache.jitter_percent"),
        ("[cache]\nmax_body_bytes = 0\n", "cache.max_body_bytes"),
        (
            "[cache]\nlocal_max_entries = 0\n",
            "cache.local_max_entries",
        ),
        ("[cache]\nreplica_id = \"a b\"\n", "cache.replica_id"),
        (
            "[ratelimit]\nreload_interval_ms = 0\n",
            "ratelimit.reload_interval_ms",
        ),
        ("[ratelimit]\nreplicas = 0\n", "ratelimit.replicas"),
        (
            "[ratelimit]\nipv6_prefix_len = 0\n",
            "ratelimit.ipv6_prefix_len",
        ),
        (
            "[client_ip]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
            "client_ip.trusted_proxies",
        ),
        (
            "[degraded]\nredis_timeout_ms = 0\n",
            "degraded.redis_timeout_ms",
        ),
        (
            "[degraded]\nprobe_interval_ms = 1\n",
            "degraded.probe_interval_ms",
        ),
        (
            "[auth]\njwks_file = \"idp.json\"\n[web]\ndev_token = true\n",
            "web.dev_token",
        ),
        ("[web]\ndev_token_ttl_secs = 1\n", "web.dev_token_ttl_secs"),
        (
            "[auth]\njwks_min_refresh_secs = 0\n",
            "auth.jwks_min_refresh_secs",
        ),
    ];
    for (toml, field) in cases {
        let message = error_of(toml);
        assert!(
            message.contains(&format!("`{field}`")),
            "{toml:?} → {message}"
        );
    }
}

#[test]
fn environment_overrides_urls_and_paths() {
    let env: HashMap<&str, &str> = [
        ("STOCKGATE_REDIS_URL", "redis://10.0.0.1:6379"),
        ("STOCKGATE_SETTLEMENT_ADDR", "http://10.0.0.2:8081/"),
        ("STOCKGATE_JWKS_URL", "https://idp/jwks.json"),
        ("STOCKGATE_LISTEN", ""),
        ("STOCKGATE_RESERVATION_KEY_FILE", "/keys/rsv-2.pem"),
        ("STOCKGATE_RESERVATION_KEY_ID", "rsv-2"),
        (
            "STOCKGATE_RESERVATION_JWKS_FILE",
            "/keys/reservation-jwks.json",
        ),
        (
            "STOCKGATE_ASSERTION_KEY_FILE",
            "/etc/stockgate/keys/gateway-assertion-key.pem",
        ),
        ("STOCKGATE_ASSERTION_KEY_ID", "gw-2"),
        (
            "STOCKGATE_GATEWAY_JWKS_FILE",
            "/etc/stockgate/keys/gateway-assertion-jwks.json",
        ),
    ]
    .into_iter()
    .collect();
    let mut config = Config::default();
    config.apply_env(|name| env.get(name).map(|v| v.to_string()));
    assert_eq!(
        config.gateway.redis_url.as_deref(),
        Some("redis://10.0.0.1:6379")
    );
    assert_eq!(config.gateway.settlement_host_port(), "10.0.0.2:8081");
    assert_eq!(
        config.gateway.auth.jwks_url.as_deref(),
        Some("https://idp/jwks.json")
    );
    assert_eq!(
        config.gateway.server.listen, "127.0.0.1:8080",
        "empty values do not override"
    );
    let r = &config.gateway.reservations;
    assert_eq!(
        (
            r.signing_key_file.as_deref(),
            r.signing_key_id.as_str(),
            r.public_jwks_file.as_deref()
        ),
        (
            Some(std::path::Path::new("/keys/rsv-2.pem")),
            "rsv-2",
            Some(std::path::Path::new("/keys/reservation-jwks.json"))
        )
    );
    let a = &config.gateway.settlement_auth;
    assert_eq!(
        (
            a.signing_key_file.as_deref(),
            a.signing_key_id.as_str(),
            gateway::service_auth::gateway_jwks_file(&config.gateway)
        ),
        (
            Some(std::path::Path::new(
                "/etc/stockgate/keys/gateway-assertion-key.pem"
            )),
            "gw-2",
            "/etc/stockgate/keys/gateway-assertion-jwks.json".into()
        )
    );
    config.validate().unwrap();
}

#[test]
fn trusted_proxies_come_from_the_environment_and_are_validated() {
    let mut config = Config::default();
    config.apply_env(|name| {
        (name == "STOCKGATE_TRUSTED_PROXIES").then(|| "10.224.0.0/12, 2001:db8::/32,".into())
    });
    assert_eq!(
        config.gateway.client_ip.trusted_proxies,
        ["10.224.0.0/12", "2001:db8::/32"]
    );
    config.validate().unwrap();

    config.apply_env(|name| (name == "STOCKGATE_TRUSTED_PROXIES").then(|| "10.224.0.1/12".into()));
    let message = config.validate().unwrap_err().to_string();
    assert_eq!(
        message,
        "config field `client_ip.trusted_proxies` \"10.224.0.1/12\" has host bits set \
         (the network is 10.224.0.0/12)"
    );
    let message = Config::from_toml("[client_ip]\nheader = \"x-real-ip\"\n").unwrap_err();
    assert!(message.contains("x-real-ip"), "{message}");
}

#[test]
fn settlement_admin_listener_comes_from_the_environment_and_is_validated() {
    let mut config = Config::default();
    config.apply_env(|name| {
        (name == "STOCKGATE_SETTLEMENT_ADMIN_LISTEN").then(|| "0.0.0.0:9191".into())
    });
    assert_eq!(
        config.settlement.admin_listen_addr,
        "0.0.0.0:9191".parse().unwrap()
    );
    config.validate().unwrap();
    // The gateway checks settlement's health on the admin port of the upstream's host.
    config.gateway.upstream.settlement_addr = "http://10.0.0.2:8081/".into();
    config.gateway.upstream.settlement_admin_port = 9191;
    assert_eq!(
        config.gateway.settlement_admin_base(),
        "http://10.0.0.2:9191"
    );

    let mut config = Config::default();
    config.apply_env(|name| (name == "STOCKGATE_SETTLEMENT_ADMIN_LISTEN").then(|| "nope".into()));
    let message = config.validate().unwrap_err().to_string();
    assert!(
        message.contains("STOCKGATE_SETTLEMENT_ADMIN_LISTEN") && message.contains("nope"),
        "{message}"
    );
    let message = error_of("[upstream]\nsettlement_admin_port = 0\n");
    assert!(
        message.contains("upstream.settlement_admin_port"),
        "{message}"
    );
    let message = error_of(
        "[settlement]\nlisten_addr = \"127.0.0.1:8081\"\nadmin_listen_addr = \"127.0.0.1:8081\"\n",
    );
    assert!(message.contains("admin_listen_addr"), "{message}");
}

#[test]
fn the_identity_provider_comes_from_the_environment_and_a_typo_is_an_error() {
    let mut config = Config::default();
    let env = |name: &str| match name {
        "STOCKGATE_AUTH_ISSUER" => Some(
            "https://login.microsoftonline.com/t1/v2.0, https://login.microsoftonline.com/t2/v2.0"
                .into(),
        ),
        "STOCKGATE_AUTH_AUDIENCE" => Some("api://stockgate".into()),
        "STOCKGATE_AUTH_DISCOVERY" => Some("true".into()),
        _ => None,
    };
    config.apply_env(env);
    let auth = &config.gateway.auth;
    assert!(auth.discovery);
    assert_eq!(auth.issuer.len(), 2);
    assert_eq!(auth.audience, ["api://stockgate"]);

    let mut config = Config::default();
    config.apply_env(|name| (name == "STOCKGATE_AUTH_DISCOVERY").then(|| "yes".into()));
    let message = config.validate().unwrap_err().to_string();
    assert!(message.contains("STOCKGATE_AUTH_DISCOVERY"), "{message}");
    assert!(message.contains("true, 1, false or 0"), "{message}");
}

#[test]
fn the_amqp_sas_key_comes_from_the_environment_and_its_absence_is_named() {
    let file = "[settlement.outbox.amqp]\nurl = \"amqps://ns.servicebus.windows.net\"\n\
                address = \"orders\"\nsas_key_name = \"stockgate-send\"\n";
    let message = error_of(file);
    assert!(message.contains("outbox.amqp.sas_key_file"), "{message}");
    assert!(message.contains("STOCKGATE_AMQP_SAS_KEY"), "{message}");

    let mut config = Config::from_toml(file).unwrap();
    config.apply_env(|name| (name == "STOCKGATE_AMQP_SAS_KEY").then(|| "k3y".into()));
    config.validate().unwrap();
    let amqp = config.settlement_config().outbox.amqp.unwrap();
    assert_eq!(amqp.settings().unwrap().key, "k3y");
    // Never in a dump of the configuration.
    assert!(!format!("{config:?}").contains("k3y"));

    let message = Config::from_toml(&format!("{file}url_typo = 1\n")).unwrap_err();
    assert!(
        message.contains("settlement.outbox.amqp") && message.contains("url_typo"),
        "{message}"
    );
    let message = error_of(
        "[settlement.outbox.amqp]\nurl = \"amqp://u:p@h\"\naddress = \"q\"\nsas_key_name = \"g\"\nsas_key_file = \"/k\"\n",
    );
    assert!(
        message.contains("outbox.amqp.url") && message.contains("credentials"),
        "{message}"
    );
}

#[test]
fn telemetry_is_off_by_default_and_reaches_both_services() {
    let config = Config::default();
    assert_eq!(config.gateway.telemetry.otlp_endpoint, None);
    assert_eq!(config.settlement_config().telemetry.otlp_endpoint, None);

    let config = Config::from_toml(
        "[telemetry]\notlp_endpoint = \"http://otel-collector:4318\"\nsampling_ratio = 0.25\n",
    )
    .unwrap();
    config.validate().unwrap();
    let settlement = config.settlement_config().telemetry;
    assert_eq!(
        settlement.traces_url().as_deref(),
        Some("http://otel-collector:4318/v1/traces")
    );
    assert_eq!(settlement.sampling_ratio, 0.25);
    assert_eq!(settlement.settlement_service_name, "stockgate-settlement");
    assert_eq!(
        config.gateway_config().telemetry.gateway_service_name,
        "stockgate-gateway"
    );

    for (text, field) in [
        (
            "[telemetry]\notlp_endpoint = \"otel:4318\"\n",
            "telemetry.otlp_endpoint",
        ),
        (
            "[telemetry]\nsampling_ratio = 2.0\n",
            "telemetry.sampling_ratio",
        ),
        (
            "[telemetry]\ngateway_service_name = \" \"\n",
            "telemetry.gateway_service_name",
        ),
    ] {
        let message = error_of(text);
        assert!(message.contains(field), "{message}");
    }
    let message = Config::from_toml("[telemetry]\nendpoint = \"http://x:4318\"\n").unwrap_err();
    assert!(message.contains("telemetry"), "{message}");
}

#[test]
fn telemetry_comes_from_the_opentelemetry_environment_variables() {
    let mut config = Config::default();
    config.apply_env(|name| match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://otel-collector:4318".into()),
        "OTEL_TRACES_SAMPLER_ARG" => Some("0.1".into()),
        _ => None,
    });
    config.validate().unwrap();
    let telemetry = config.settlement_config().telemetry;
    assert_eq!(
        telemetry.otlp_endpoint.as_deref(),
        Some("http://otel-collector:4318")
    );
    assert_eq!(telemetry.sampling_ratio, 0.1);

    let mut config = Config::default();
    config.apply_env(|name| (name == "OTEL_TRACES_SAMPLER_ARG").then(|| "often".into()));
    let message = config.validate().unwrap_err().to_string();
    assert!(
        message.contains("OTEL_TRACES_SAMPLER_ARG") && message.contains("often"),
        "{message}"
    );
    let mut config = Config::default();
    config.apply_env(|name| (name == "OTEL_TRACES_SAMPLER_ARG").then(|| "1.5".into()));
    let message = config.validate().unwrap_err().to_string();
    assert!(message.contains("telemetry.sampling_ratio"), "{message}");
}
