//! The built-in player page and its viewer sessions.
//!
//! `GET /player/{path}` serves one self-contained HTML page (embedded, no build step) that plays
//! `{mount}/{path}` with native controls, forwarding the query string it was opened with (a signed
//! link's parameters) plus its session id. `GET /ws` is the page's presence socket.

pub mod sessions;
pub mod ws;

use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::storage::body::OriginBody;

const PAGE: &str = include_str!("page.html");

/// The page with the mount filled in (HTML-escaped; the mount is validated config anyway).
/// Built once at startup (`App::player_page`).
pub fn page(mount: &str) -> bytes::Bytes {
    let escaped: String = mount
        .chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            c => c.to_string(),
        })
        .collect();
    PAGE.replace("{{MOUNT}}", &escaped).into()
}

/// The player page (built once by [`page`]) for any `/player/...` path (the page reads its
/// own URL).
pub fn page_response(page: &bytes::Bytes, method: &Method) -> Response<OriginBody> {
    let mut head = crate::http::response::error_head(
        std::str::from_utf8(page).unwrap_or(""),
        &HeaderValue::from_static("no-cache"),
        SystemTime::now(),
    );
    let h = &mut head;
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The page URL may carry a signed link's token: never send it on as a Referer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             media-src 'self'; connect-src 'self'; img-src 'self'",
        ),
    );
    let body = match *method {
        Method::HEAD => OriginBody::Empty,
        _ => OriginBody::Bytes(Some(page.clone())),
    };
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::OK;
    *r.headers_mut() = head;
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn mount_is_escaped_into_the_page() {
        let p = super::page("/vid\"eo");
        let p = std::str::from_utf8(&p).unwrap();
        assert!(p.contains("/vid&quot;eo"));
        assert!(!p.contains("{{MOUNT}}"));
    }
}
