//! What the gateway serves to a browser: the storefront (`/`) and the ops console (`/ops`)
//! from assets built into the binary ([`assets`]). The pages talk only to the public API;
//! the routes they call that the edge answers itself (the dev sign-in, the console's view of
//! this gateway) are edge handlers (`crate::edge::dev_token`, `crate::edge::edge_stats`).

pub mod assets;

pub use assets::Site;

/// Whether `path` is one of the pages or under `/assets/` (the route table asks).
pub fn is_page_path(path: &str) -> bool {
    matches!(path, "/" | "/ops") || path.strip_prefix("/assets/").is_some_and(|n| !n.is_empty())
}
