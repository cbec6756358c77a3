//! `POST /dev/token {"buyer": "alice", "role": "buyer" | "ops"}`: the storefront's sign-in for
//! local use. It mints a token with the dev identity key (the one `stockgate token` uses),
//! for anyone who asks, so it exists only where [`DevSignIn`] says so (the fully
//! embedded default, or switched on explicitly, with a warning); elsewhere the path is a
//! plain 404.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pingora::proxy::Session;
use serde::Deserialize;

use crate::auth::{OPS_ROLE, devkeys};
use crate::config::{Config, DevSignIn};
use crate::edge::EdgeLimits;
use crate::edge::respond::{self, Reply, rfc3339_ms};
use crate::problem::Problem;

/// What the endpoint needs to sign: the configuration naming the dev key, issuer, audience.
pub struct DevTokens {
    config: Config,
    ttl: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    buyer: String,
    #[serde(default)]
    role: Role,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Role {
    #[default]
    Buyer,
    Ops,
}

impl DevTokens {
    /// `Some` unless `sign_in` is [`DevSignIn::Off`]; logs a warning when it is on, since
    /// anyone who reaches the listener can then mint an ops token.
    pub fn new(config: &Config, sign_in: DevSignIn) -> Option<DevTokens> {
        let warning = warning(sign_in, &config.server.listen)?;
        tracing::warn!(listen = %config.server.listen, ?sign_in, "{warning}");
        Some(DevTokens {
            config: config.clone(),
            ttl: Duration::from_secs(config.web.dev_token_ttl_secs),
        })
    }

    /// Validates the request and mints the token: 200 `{"token","sub","roles","expires_at"}`.
    pub fn mint(&self, body: &[u8], request_id: &str) -> Reply {
        let request: TokenRequest = match respond::json_object(body) {
            Ok(request) => request,
            Err(error) => {
                let detail = format!(
                    "body must be {{\"buyer\": name, \"role\": \"buyer\" or \"ops\"}}: {error}"
                );
                return Reply::problem(&Problem::bad_request(detail), request_id);
            }
        };
        // The name becomes the token's `sub`: the rule every verified `sub` must pass.
        if reservation_core::BuyerId::parse(&request.buyer).is_err() {
            let problem = Problem::new(
                400,
                "invalid_buyer",
                "buyer must be 1 to 128 characters, without control characters",
            );
            return Reply::problem(&problem, request_id);
        }
        let roles = match request.role {
            Role::Buyer => Vec::new(),
            Role::Ops => vec![OPS_ROLE.to_owned()],
        };
        match devkeys::mint_dev_token(&self.config, &request.buyer, &roles, self.ttl) {
            Ok(token) => {
                let expires_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64)
                    + self.ttl.as_millis() as u64;
                let body = serde_json::json!({
                    "token": token,
                    "sub": request.buyer,
                    "roles": roles,
                    "expires_at": rfc3339_ms(expires_ms),
                });
                Reply::json(200, &body).header("cache-control", "no-store")
            }
            Err(error) => {
                tracing::error!(%error, "minting a dev token failed");
                Reply::problem(
                    &Problem::internal("the dev identity key is unavailable"),
                    request_id,
                )
            }
        }
    }
}

/// What the startup log and banner say while the dev sign-in is on; `None` when it is off.
pub fn warning(sign_in: DevSignIn, listen: &str) -> Option<String> {
    let why = match sign_in {
        DevSignIn::Off => return None,
        DevSignIn::EmbeddedDefault => "the embedded default (local use)",
        DevSignIn::Explicit => "switched on by web.dev_token / STOCKGATE_DEV_TOKEN",
    };
    Some(format!(
        "WARNING: dev sign-in is on ({why}): anyone who reaches {listen} can mint buyer and \
         ops tokens with POST /dev/token; never run this in production"
    ))
}

/// The route's handler: 404 while off, 405 for anything but POST, else [`DevTokens::mint`].
pub async fn handle(
    dev: Option<&DevTokens>,
    limits: &EdgeLimits,
    session: &mut Session,
    request_id: &str,
) -> Reply {
    let Some(dev) = dev else {
        return Reply::problem(&Problem::not_found(), request_id);
    };
    if session.req_header().method != http::Method::POST {
        return Reply::problem(&Problem::method_not_allowed(), request_id).header("allow", "POST");
    }
    match respond::read_body(session, limits).await {
        Ok(body) => dev.mint(&body, request_id),
        Err(problem) => Reply::problem(&problem, request_id).closing(),
    }
}
