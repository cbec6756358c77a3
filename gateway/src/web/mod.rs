//! What the gateway serves to a browser: the storefront (`/`) and the ops console (`/ops`)
//! from assets built into the binary ([`assets`]), the dev sign-in `POST /dev/token`
//! ([`dev_token`], local use only), and the ops console's view of this gateway,
//! `GET /api/v1/admin/edge` ([`edge_stats`]). The pages talk only to the public API.

pub mod assets;
pub mod dev_token;
pub mod edge_stats;

pub use assets::Site;
pub use dev_token::DevTokens;

/// Whether `path` is one of the pages or under `/assets/` (the route table asks).
pub fn is_page_path(path: &str) -> bool {
    matches!(path, "/" | "/ops") || path.strip_prefix("/assets/").is_some_and(|n| !n.is_empty())
}
