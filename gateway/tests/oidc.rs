//! Sign-in with an OpenID Connect provider, against a local provider shaped like Microsoft
//! Entra ID and served over HTTPS with a throwaway CA (`testkit::oidc`): the gateway finds the
//! key set by discovery, fetches it over TLS trusting that CA (`auth.ca_file`), takes the
//! buyer id from `oid` and the ops role from Entra's `roles` through `auth.roles_map`, and
//! follows the provider's key rotation. What the provider (or whoever answers for it) sends is
//! bounded: an untrusted certificate, a redirect to another host, an oversized key set and a
//! discovery document naming another issuer each stop the start, and keys that could not be
//! refreshed for `auth.max_stale_keys_secs` stop verifying (503, the token may be fine).

use std::time::Duration;

use gateway::config::Config;
use serde_json::Value;
use testkit::oidc::{APP_ID, TENANT};
use testkit::{Misbehaviour, OidcProvider, TestGateway, body};

/// The Entra ID configuration of config/entra-id.toml, pointed at `provider`.
fn entra(config: &mut Config, provider: &OidcProvider) {
    let auth = &mut config.auth;
    auth.discovery = true;
    auth.issuer = vec![provider.issuer.clone()];
    auth.audience = vec![APP_ID.into()];
    auth.ca_file = Some(provider.ca_file.clone());
    auth.subject_claim = "oid".into();
    auth.roles_claim = "roles".into();
    auth.roles_map = [("Stockgate.Ops".to_owned(), "ops".to_owned())].into();
    auth.algorithms = vec!["RS256".into()];
}

async fn start(provider: &OidcProvider, adjust: impl FnOnce(&mut Config)) -> TestGateway {
    testkit::start_gateway_with_keys(|config| {
        entra(config, provider);
        adjust(config);
    })
    .await
    .unwrap_or_else(|e| panic!("{}", gateway::auth::fetch::error_chain(&e)))
}

/// The start failure of a gateway configured for `provider`, with its causes.
async fn start_error(provider: &OidcProvider, adjust: impl FnOnce(&mut Config)) -> String {
    let result = testkit::start_gateway_with_keys(|config| {
        entra(config, provider);
        adjust(config);
    })
    .await;
    match result {
        Ok(_) => panic!("the gateway started"),
        Err(error) => gateway::auth::fetch::error_chain(&error),
    }
}

async fn get(gw: &TestGateway, path: &str, token: &str) -> (u16, Value) {
    body(
        gw.http
            .get(gw.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_roles_map_to_ops_and_the_buyer_is_its_oid() {
    let provider = OidcProvider::start().await;
    let gw = start(&provider, |_| {}).await;
    assert_eq!(provider.discovery_fetches(), 1);

    let ops = provider.token("5f2b9a40-0c1d-4e7a-9b3f-ops000000001", &["Stockgate.Ops"]);
    let (status, answer) = get(&gw, "/api/v1/admin/reconcile", &ops).await;
    assert_eq!(status, 200, "{answer}");
    let asserted = gw.last_asserted().unwrap();
    assert_eq!(
        asserted.sub.as_deref(),
        Some("5f2b9a40-0c1d-4e7a-9b3f-ops000000001"),
        "the buyer id is oid, not Entra's pairwise sub"
    );
    assert_eq!(asserted.roles, ["ops"]);

    // A buyer: no mapped role. An unmapped value, even one spelled "ops", grants nothing.
    let buyer_oid = "0a1b2c3d-4e5f-4a6b-8c7d-buyer0000001";
    for roles in [&[][..], &["Stockgate.Viewer"], &["ops"]] {
        let buyer = provider.token(buyer_oid, roles);
        let (status, answer) = get(&gw, "/api/v1/admin/reconcile", &buyer).await;
        assert_eq!(
            (status, &answer["code"]),
            (403, &"forbidden".into()),
            "{roles:?}"
        );
        let (status, answer) = get(&gw, "/api/v1/orders", &buyer).await;
        assert_eq!(status, 200, "{answer}");
        let asserted = gw.last_asserted().unwrap();
        assert_eq!(asserted.sub.as_deref(), Some(buyer_oid));
        assert!(
            asserted.roles.is_empty(),
            "{roles:?} → {:?}",
            asserted.roles
        );
    }

    // Reserving at the edge works with the Entra token too (RS256, nbf set, aud a string).
    let buyer = provider.token(buyer_oid, &[]);
    let reserved = gw.reserve(&buyer, &testkit::fresh_key(), "HOT", 1).await;
    assert_eq!(reserved.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_audience_issuer_or_missing_claims_are_refused() {
    let provider = OidcProvider::start().await;
    let gw = start(&provider, |_| {}).await;
    let key = provider.signing_key();
    let good = provider.claims("7c6d5e4f-3a2b-4c1d-9e8f-000000000007", &[]);
    let variant = |change: &dyn Fn(&mut Value)| {
        let mut claims = good.clone();
        change(&mut claims);
        key.sign(&claims)
    };
    let cases: [(&str, String); 6] = [
        (
            "another app's audience",
            variant(&|c| c["aud"] = "api://other-app".into()),
        ),
        (
            "another tenant's issuer",
            variant(&|c| {
                c["iss"] =
                    "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0"
                        .into()
            }),
        ),
        (
            "no exp",
            variant(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
        ),
        (
            "no oid",
            variant(&|c| drop(c.as_object_mut().unwrap().remove("oid"))),
        ),
        (
            "roles not an array",
            variant(&|c| c["roles"] = "Stockgate.Ops".into()),
        ),
        (
            "not valid yet",
            variant(&|c| c["nbf"] = (testkit::now_secs() + 120).into()),
        ),
    ];
    for (name, token) in cases {
        let (status, answer) = get(&gw, "/api/v1/orders", &token).await;
        assert_eq!(
            (status, &answer["code"]),
            (401, &"invalid_token".into()),
            "{name}"
        );
    }
    // Without nbf (optional) and with aud as a list naming the app: accepted.
    let token = variant(&|c| {
        c.as_object_mut().unwrap().remove("nbf");
        c["aud"] = serde_json::json!(["api://other-app", APP_ID]);
    });
    let (status, answer) = get(&gw, "/api/v1/orders", &token).await;
    assert_eq!(status, 200, "{answer}");
}

/// A gateway trusting both providers (tenants): both issuers, both CAs.
async fn start_for_both(a: &OidcProvider, b: &OidcProvider) -> TestGateway {
    let cas = a.ca_file.with_file_name("both-cas.pem");
    let pem = [&a.ca_file, &b.ca_file].map(|f| std::fs::read_to_string(f).unwrap());
    std::fs::write(&cas, pem.concat()).unwrap();
    start(a, |c| {
        c.auth.issuer = vec![a.issuer.clone(), b.issuer.clone()];
        c.auth.ca_file = Some(cas.clone());
    })
    .await
}

/// A user of each tenant reaches a buyer route as its `oid` (`suffix` keeps the ids apart).
async fn each_tenant_signs_in(gw: &TestGateway, a: &OidcProvider, b: &OidcProvider, suffix: &str) {
    for (provider, tenant) in [
        (a, "a1a1a1a1-0000-4000-8000-tenant-a-"),
        (b, "b2b2b2b2-0000-4000-8000-tenant-b-"),
    ] {
        let oid = format!("{tenant}{suffix}");
        let (status, answer) = get(gw, "/api/v1/orders", &provider.token(&oid, &[])).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            gw.last_asserted().unwrap().sub.as_deref(),
            Some(oid.as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_each_vouch_only_for_their_own_tokens() {
    // Two providers (tenants), both publishing a key named "entra-key-1": the gateway keeps
    // both, tries each, and a key found by one issuer's discovery verifies only that issuer's
    // tokens.
    let a = OidcProvider::start().await;
    let b = OidcProvider::start().await;
    assert_eq!(a.signing_key().kid, b.signing_key().kid);
    let gw = start_for_both(&a, &b).await;
    each_tenant_signs_in(&gw, &a, &b, "001").await;
    // A's key signing a token that claims B's issuer.
    let mut forged = a.claims("0f0e0d0c-0b0a-4909-8807-forged000001", &["Stockgate.Ops"]);
    forged["iss"] = b.issuer.clone().into();
    let (status, answer) = get(&gw, "/api/v1/orders", &a.signing_key().sign(&forged)).await;
    assert_eq!(
        (status, &answer["code"]),
        (401, &"invalid_token".into()),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_publishing_the_same_key_each_sign_in() {
    // Entra ID publishes one key set in every tenant: the gateway holds the same key twice,
    // once per issuer, and tenant B's tokens must not stop at tenant A's copy.
    let a = OidcProvider::start().await;
    let b = OidcProvider::start().await;
    b.use_key(a.signing_key());
    let gw = start_for_both(&a, &b).await;
    each_tenant_signs_in(&gw, &a, &b, "002").await;
    // The shared key signing a token of an issuer that is not configured.
    let mut foreign = a.claims("0f0e0d0c-0b0a-4909-8807-foreign00001", &[]);
    foreign["iss"] = "https://login.microsoftonline.com/another-tenant/v2.0".into();
    let (status, answer) = get(&gw, "/api/v1/orders", &a.signing_key().sign(&foreign)).await;
    assert_eq!(
        (status, &answer["code"]),
        (401, &"invalid_token".into()),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_required_scope_is_403_insufficient_scope() {
    let provider = OidcProvider::start().await;
    let gw = start(&provider, |c| {
        c.auth.required_scopes = vec!["Reservations.Write".into()];
    })
    .await;
    let key = provider.signing_key();
    let mut claims = provider.claims("1e2d3c4b-5a69-4788-9a0b-000000000011", &[]);
    let (status, answer) = get(&gw, "/api/v1/orders", &key.sign(&claims)).await;
    assert_eq!(
        (status, &answer["code"]),
        (403, &"insufficient_scope".into())
    );
    claims["scp"] = "Orders.Read Reservations.Write".into();
    let (status, answer) = get(&gw, "/api/v1/orders", &key.sign(&claims)).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_taken_up_and_the_withdrawn_one_refused() {
    let provider = OidcProvider::start().await;
    let gw = start(&provider, |c| c.auth.jwks_min_refresh_secs = 1).await;
    let oid = "9b8a7c6d-5e4f-4a3b-8c2d-rotation0001";
    let old = provider.signing_key();
    let (status, answer) = get(&gw, "/api/v1/orders", &old.sign(&provider.claims(oid, &[]))).await;
    assert_eq!(status, 200, "{answer}");

    // The provider rotates: the new key signs, the old one is no longer published.
    let new = provider.rotate();
    assert_ne!(new.kid, old.kid);
    let fetches = provider.key_fetches();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The first token with the new kid makes the gateway re-read the set (rate-limited).
    let (status, answer) = get(&gw, "/api/v1/orders", &new.sign(&provider.claims(oid, &[]))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(provider.key_fetches(), fetches + 1);
    // A token signed by the withdrawn key (never seen before, so not in the verified cache).
    let stale_signed = old.sign(&provider.claims("another-user-of-the-old-key", &[]));
    let (status, answer) = get(&gw, "/api/v1/orders", &stale_signed).await;
    assert_eq!(
        (status, &answer["code"]),
        (401, &"invalid_token".into()),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_stops_the_start() {
    // Without ca_file the throwaway CA is not among the system roots: discovery fails at the
    // TLS handshake and the gateway does not start (better than starting and refusing every
    // buyer).
    let provider = OidcProvider::start().await;
    let message = start_error(&provider, |c| c.auth.ca_file = None).await;
    assert!(
        message.contains("openid discovery of") && message.contains("invalid peer certificate"),
        "{message}"
    );
    assert_eq!(provider.discovery_fetches(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_cannot_be_refreshed_go_stale_and_answer_503() {
    let provider = OidcProvider::start().await;
    let gw = start(&provider, |c| {
        c.auth.jwks_refresh_secs = 1;
        c.auth.max_stale_keys_secs = 3;
    })
    .await;
    let token = provider.token("2a3b4c5d-6e7f-4a8b-9c0d-stale0000001", &[]);
    let (status, _) = get(&gw, "/api/v1/orders", &token).await;
    assert_eq!(status, 200);
    // Every refresh from now on fails (a body over the cap). The last good read was at most
    // one refresh interval ago: the keys stay at least 2 s more, at most 3 s.
    provider.misbehave(Misbehaviour::OversizedKeys);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let fresh = provider.token("2a3b4c5d-6e7f-4a8b-9c0d-stale0000002", &[]);
    let (status, answer) = get(&gw, "/api/v1/orders", &fresh).await;
    assert_eq!(status, 200, "still within max_stale_keys_secs: {answer}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late = provider.token("2a3b4c5d-6e7f-4a8b-9c0d-stale0000003", &[]);
    let response = gw
        .http
        .get(gw.url("/api/v1/orders"))
        .bearer_auth(&late)
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let (status, answer) = body(response).await;
    assert_eq!(
        (status, &answer["code"]),
        (503, &"identity_keys_unavailable".into())
    );
    assert!(
        gw.metrics_show("stockgate_jwks_errors_total{kind=\"too_large\"}")
            .await,
        "{}",
        gw.metrics().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_host_is_refused() {
    let provider = OidcProvider::start().await;
    // The same server under another name: another origin, so not followed.
    let elsewhere = format!(
        "https://localhost:{}/{TENANT}/discovery/v2.0/keys",
        provider.addr.port()
    );
    provider.misbehave(Misbehaviour::RedirectKeysTo(elsewhere));
    let message = start_error(&provider, |_| {}).await;
    assert!(
        message.contains("answered 303") && message.contains("another origin"),
        "{message}"
    );
    assert_eq!(
        provider.key_fetches(),
        1,
        "the redirect target was never asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_key_set_is_refused() {
    let provider = OidcProvider::start().await;
    provider.misbehave(Misbehaviour::OversizedKeys);
    let message = start_error(&provider, |_| {}).await;
    assert!(
        message.contains("body larger than 262144 bytes"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_document_naming_another_issuer_is_refused() {
    let provider = OidcProvider::start().await;
    let other = "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0";
    provider.misbehave(Misbehaviour::DiscoveryNamesIssuer(other.into()));
    let message = start_error(&provider, |_| {}).await;
    assert!(
        message.contains(&format!("the document names the issuer {other:?}")),
        "{message}"
    );
    assert_eq!(provider.key_fetches(), 0);
}

/// One fixture per `[auth]` rule of config validation, each asserting its message.
#[test]
fn auth_config_rules_name_their_field() {
    let refused = |adjust: &dyn Fn(&mut Config)| {
        let mut config = Config::default();
        adjust(&mut config);
        config.validate().unwrap_err().to_string()
    };
    let tenant = "https://login.microsoftonline.com/<tenant-id>/v2.0";
    assert_eq!(
        refused(&|c| c.auth.issuer = vec![tenant.into()]),
        format!(
            "config field `auth.issuer` holds the placeholder {tenant:?}: replace it with your \
             own value"
        )
    );
    assert!(
        refused(&|c| c.auth.audience = vec!["<app-client-id>".into()])
            .starts_with("config field `auth.audience` holds the placeholder \"<app-client-id>\"")
    );
    let two = || {
        vec![
            "https://login.microsoftonline.com/a/v2.0".to_owned(),
            "https://login.microsoftonline.com/b/v2.0".to_owned(),
        ]
    };
    assert!(refused(&|c| c.auth.issuer = two()).starts_with(
        "config field `auth.issuer` lists several issuers, whose \"sub\" claims may name \
             different buyers alike"
    ));
    for accepted in [
        (|c: &mut Config| c.auth.subject_claim = "oid".into()) as fn(&mut Config),
        |c| c.auth.shared_subjects_across_issuers = true,
    ] {
        let mut config = Config::default();
        config.auth.issuer = two();
        accepted(&mut config);
        config.validate().unwrap();
    }
    assert_eq!(
        refused(&|c| c.auth.max_stale_keys_secs = 599),
        "config field `auth.max_stale_keys_secs` must be at least twice auth.jwks_refresh_secs"
    );
    assert!(
        refused(&|c| {
            c.auth.discovery = true;
            c.auth.jwks_url = Some("https://idp/jwks".into());
        })
        .starts_with("config field `auth.discovery` names a second key source")
    );
    assert!(
        refused(&|c| {
            c.auth.discovery = true;
            c.auth.issuer = vec!["http://idp.example/tenant".into()];
        })
        .contains("plain http is allowed only to a loopback host")
    );
    assert!(
        refused(&|c| c.auth.jwks_url = Some("http://idp.internal/jwks.json".into()))
            .starts_with("config field `auth.jwks_url` must be https://")
    );
    assert!(
        refused(&|c| c.auth.roles_map = [("Stockgate.Ops".into(), "ops,admin".into())].into())
            .starts_with("config field `auth.roles_map`")
    );
    assert!(
        refused(&|c| c.auth.required_scopes = vec!["a b".into()])
            .starts_with("config field `auth.required_scopes`")
    );
}
