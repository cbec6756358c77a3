//! The storefront and ops console assets: hand-written HTML, CSS and ES modules from the
//! repository's `web/assets/`, built into the binary with `include_bytes!` (no Node.js and no
//! files at run time). Each answer carries its `ETag` (a hash of the bytes, so a new build
//! with changed assets gets new tags), `cache-control: no-cache` (the names carry no version,
//! so the browser revalidates and gets a cheap 304), and a strict content security policy:
//! scripts, styles and requests only from this origin, no inline script, no framing.

use http::Method;

use crate::edge::respond::Reply;
use crate::problem::Problem;

/// Only this origin's files; no inline script or style, no plugins, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file served, by request path.
const FILES: &[(&str, &str, &[u8])] = &[
    ("/", HTML, include_bytes!("../../../web/assets/index.html")),
    ("/ops", HTML, include_bytes!("../../../web/assets/ops.html")),
    (
        "/assets/app.css",
        CSS,
        include_bytes!("../../../web/assets/app.css"),
    ),
    (
        "/assets/api.js",
        JS,
        include_bytes!("../../../web/assets/api.js"),
    ),
    (
        "/assets/storefront.js",
        JS,
        include_bytes!("../../../web/assets/storefront.js"),
    ),
    (
        "/assets/ops.js",
        JS,
        include_bytes!("../../../web/assets/ops.js"),
    ),
];

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    etag: String,
}

/// The served files with their tags, computed once at start.
pub struct Site {
    assets: Vec<Asset>,
}

impl Default for Site {
    fn default() -> Self {
        Site::new()
    }
}

impl Site {
    pub fn new() -> Site {
        let assets = FILES
            .iter()
            .map(|(path, content_type, body)| Asset {
                path,
                content_type,
                body,
                etag: format!("\"{:016x}\"", fnv1a(body)),
            })
            .collect();
        Site { assets }
    }

    /// The answer to `method path`; `if_none_match` is the request's header.
    pub fn serve(
        &self,
        method: &Method,
        path: &str,
        if_none_match: Option<&str>,
        request_id: &str,
    ) -> Reply {
        let Some(asset) = self.assets.iter().find(|a| a.path == path) else {
            return Reply::problem(&Problem::not_found(), request_id);
        };
        if method != Method::GET && method != Method::HEAD {
            return Reply::problem(&Problem::method_not_allowed(), request_id)
                .header("allow", "GET, HEAD");
        }
        let fresh = if_none_match.is_some_and(|value| {
            value
                .split(',')
                .map(|tag| tag.trim().trim_start_matches("W/"))
                .any(|tag| tag == "*" || tag == asset.etag)
        });
        let reply = if fresh {
            Reply::empty(304)
        } else {
            Reply {
                status: 200,
                content_type: asset.content_type,
                body: bytes::Bytes::from_static(asset.body),
                headers: Vec::new(),
                close: false,
            }
        };
        reply
            .header("etag", asset.etag.clone())
            .header("cache-control", "no-cache")
            .header("content-security-policy", CONTENT_SECURITY_POLICY)
            .header("x-content-type-options", "nosniff")
            .header("referrer-policy", "no-referrer")
    }
}

/// 64-bit FNV-1a: a stable content hash for the tags (not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
        reply
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn pages_have_type_tag_and_policy() {
        let site = Site::new();
        let page = site.serve(&Method::GET, "/", None, "r1");
        assert_eq!(page.status, 200);
        assert_eq!(page.content_type, HTML);
        assert!(header(&page, "content-security-policy").is_some_and(|p| !p.contains("unsafe")));
        let script = site.serve(&Method::GET, "/assets/api.js", None, "r1");
        assert_eq!((script.status, script.content_type), (200, JS));
        assert_ne!(header(&page, "etag"), header(&script, "etag"));
    }

    #[test]
    fn a_matching_tag_is_not_modified_and_unknown_files_are_404() {
        let site = Site::new();
        let tag = header(&site.serve(&Method::GET, "/ops", None, "r"), "etag")
            .unwrap()
            .to_owned();
        let again = site.serve(&Method::GET, "/ops", Some(&format!("\"x\", {tag}")), "r");
        assert_eq!((again.status, again.body.len()), (304, 0));
        let stale = site.serve(&Method::GET, "/ops", Some("\"old\""), "r");
        assert_eq!(stale.status, 200);
        assert_eq!(
            site.serve(&Method::GET, "/assets/nope.js", None, "r")
                .status,
            404
        );
        assert_eq!(site.serve(&Method::POST, "/", None, "r").status, 405);
    }
}
