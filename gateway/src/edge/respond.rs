//! Writing the edge's own answers (JSON and problem+json, always with `x-request-id`, and
//! `Retry-After` on 429/503) and reading request bodies under the size cap.

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use reservation_core::wire::{self, PROBLEM_CONTENT_TYPE};
use serde::Serialize;
use serde::de::DeserializeOwned;

use thiserror::Error;

use super::EdgeLimits;
use crate::problem::Problem;

pub use reservation_core::wire::headers::REQUEST_ID;
/// The edge's JSON bodies write their times with the wire's formatter.
pub use reservation_core::wire::rfc3339_ms;

/// One answer of the edge, before it is written.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
    pub headers: Vec<(&'static str, String)>,
    /// Close the connection afterwards (the request body was not read to its end).
    pub close: bool,
}

impl Reply {
    pub fn json(status: u16, value: &impl Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply {
                status,
                content_type: "application/json",
                body: body.into(),
                headers: Vec::new(),
                close: false,
            },
            Err(error) => {
                tracing::error!(%error, "response serialization failed");
                Reply::problem(&Problem::internal("response serialization failed"), "")
            }
        }
    }

    /// A JSON body that is already encoded (e.g. the settlement's order, passed on as is).
    pub fn raw_json(status: u16, body: Bytes) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body,
            headers: Vec::new(),
            close: false,
        }
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            content_type: "",
            body: Bytes::new(),
            headers: Vec::new(),
            close: false,
        }
    }

    pub fn problem(problem: &Problem, request_id: &str) -> Reply {
        let mut headers = Vec::new();
        if let Some(secs) = problem.retry_after {
            headers.push((wire::headers::RETRY_AFTER, secs.to_string()));
        }
        Reply {
            status: problem.status,
            content_type: PROBLEM_CONTENT_TYPE,
            body: problem.to_json(Some(request_id)).into(),
            headers,
            close: false,
        }
    }

    /// A problem body gains `trace_id` (tracing on); other bodies are left as they are. Only
    /// refusals pay for the re-encoding, and only while tracing is on.
    pub fn with_trace_id(mut self, trace_id: &str) -> Reply {
        if self.content_type != PROBLEM_CONTENT_TYPE {
            return self;
        }
        if let Ok(serde_json::Value::Object(mut body)) =
            serde_json::from_slice::<serde_json::Value>(&self.body)
        {
            body.insert("trace_id".into(), trace_id.into());
            if let Ok(encoded) = serde_json::to_vec(&body) {
                self.body = encoded.into();
            }
        }
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn closing(mut self) -> Reply {
        self.close = true;
        self
    }
}

/// Writes `reply` as the whole response. Errors mean the client went away; the caller only
/// logs them.
pub async fn send(session: &mut Session, request_id: &str, reply: Reply) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(reply.status, Some(4 + reply.headers.len()))?;
    header.insert_header(REQUEST_ID, request_id)?;
    if !reply.content_type.is_empty() {
        header.insert_header("content-type", reply.content_type)?;
    }
    header.insert_header("content-length", reply.body.len().to_string())?;
    for (name, value) in reply.headers {
        header.insert_header(name, value)?;
    }
    if reply.close {
        // The unread rest of the body stays on the socket; the connection cannot be reused.
        session.set_keepalive(None);
        header.insert_header("connection", "close")?;
    }
    let head_only = session.req_header().method == http::Method::HEAD || reply.body.is_empty();
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(reply.body), true).await?;
    }
    Ok(())
}

/// Reads the whole request body, refusing with 413 as soon as it passes the body cap (a
/// declared `Content-Length` over the cap is refused before the first byte is read), and with
/// 408 when the whole body has not arrived within the body deadline. The deadline is total,
/// not per read: a client trickling a byte every few seconds (slowloris on the body) is cut
/// off as surely as a silent one.
pub async fn read_body(session: &mut Session, limits: &EdgeLimits) -> Result<Bytes, Problem> {
    let limit = limits.max_body_bytes;
    if declared_length(session).is_some_and(|len| len > limit) {
        return Err(Problem::payload_too_large(limit));
    }
    let read_all = async {
        let mut body = BytesMut::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err(Problem::payload_too_large(limit));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body.freeze()),
                Err(error) => {
                    tracing::debug!(%error, "reading request body failed");
                    // A timed-out read is the client's slowness; anything else is a body that
                    // does not parse (bad chunk framing) or a client that went away.
                    return Err(match error.etype() {
                        pingora::ErrorType::ReadTimedout => body_timeout(),
                        _ => Problem::bad_request("malformed request body"),
                    });
                }
            }
        }
    };
    tokio::time::timeout(limits.body_read_timeout, read_all)
        .await
        .unwrap_or_else(|_| Err(body_timeout()))
}

/// Reads and drops a request body until its end, `max_bytes` read, `deadline` passed or an
/// error, whichever comes first; nothing is kept.
pub async fn discard_body(session: &mut Session, max_bytes: usize, deadline: std::time::Duration) {
    let discard = async {
        let mut read = 0;
        while read <= max_bytes {
            match session.read_request_body().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) | Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(deadline, discard).await;
}

/// Why a request body is not the JSON object a route takes; its text goes into the 400
/// problem's detail as it is.
#[derive(Debug, Error)]
pub enum BodyError {
    /// Not an object at all (an array, a scalar, nothing).
    #[error("expected a JSON object")]
    NotAnObject,
    /// An object serde refused: the wrong fields or types, or not JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Parses a request body that must be one JSON object. Serde also fills a struct from a JSON
/// array of its fields in order (`["HOT", 1]` for `{"sku","qty"}`); the API takes objects
/// only, so anything that does not start with `{` is refused before serde sees it.
pub fn json_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(BodyError::NotAnObject);
    }
    Ok(serde_json::from_slice(body)?)
}

/// The answer to a request body that did not arrive in time.
pub fn body_timeout() -> Problem {
    Problem::new(
        408,
        "request_timeout",
        "the request body was not received in time",
    )
}

/// The request's `Content-Length`, when present and a number.
pub fn declared_length(session: &Session) -> Option<usize> {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// A request header as text, if present and valid UTF-8.
pub fn header_str<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_ms(0u64), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_935_600_123u64), "2026-11-29T07:00:00.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000u64), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn body_errors_read_as_before() {
        let not_an_object = json_object::<serde_json::Value>(b" [1]").unwrap_err();
        assert_eq!(not_an_object.to_string(), "expected a JSON object");
        let serde = serde_json::from_slice::<serde_json::Value>(b"{\"a\":").unwrap_err();
        let refused = json_object::<serde_json::Value>(b"{\"a\":").unwrap_err();
        assert_eq!(refused.to_string(), serde.to_string());
        assert!(matches!(refused, BodyError::Json(_)));
    }
}
