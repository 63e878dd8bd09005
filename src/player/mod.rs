//! The built-in player page and its viewer sessions.
//!
//! `GET /player/{path}` serves one self-contained HTML page (embedded, no build step) that plays
//! `{mount}/{path}` with native controls, forwarding the query string it was opened with (a signed
//! link's parameters) plus its session id. `GET /ws` is the page's presence socket.

pub mod libraries;
pub mod sessions;
pub mod ws;

use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::storage::body::OriginBody;
use libraries::{Libraries, Library};

const PAGE: &str = include_str!("page.html");

/// The player page for this configuration, built once at startup (`App::player`).
pub struct Page {
    html: bytes::Bytes,
    csp: HeaderValue,
    pub libraries: Libraries,
}

fn html_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The page with the mount and the libraries filled in (HTML-escaped; both are validated
/// config anyway), and its Content-Security-Policy: scripts inline and from the libraries'
/// origins only; media from this origin and the `blob:` URLs Media Source Extensions use.
pub fn page(mount: &str, libraries: Libraries) -> Page {
    let lib = |l: &Option<Library>| {
        l.as_ref().map_or((String::new(), String::new()), |l| {
            (html_escape(&l.src), html_escape(&l.integrity))
        })
    };
    let (hls_src, hls_sri) = lib(&libraries.hls);
    let (dash_src, dash_sri) = lib(&libraries.dash);
    let html = PAGE
        .replace("{{MOUNT}}", &html_escape(mount))
        .replace("{{HLS_SRC}}", &hls_src)
        .replace("{{HLS_SRI}}", &hls_sri)
        .replace("{{DASH_SRC}}", &dash_src)
        .replace("{{DASH_SRI}}", &dash_sri);
    let csp = format!(
        "default-src 'none'; script-src 'unsafe-inline'{}; style-src 'unsafe-inline'; \
         media-src 'self' blob:; worker-src blob:; connect-src 'self'; img-src 'self'",
        libraries.script_sources()
    );
    Page {
        html: html.into(),
        // Library URLs passed config validation (no whitespace, quotes or control bytes).
        csp: HeaderValue::from_str(&csp)
            .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
        libraries,
    }
}

/// The player page (built once by [`page`]) for any `/player/...` path (the page reads its
/// own URL), or a library the origin serves under `/player/.lib/`.
pub fn page_response(page: &Page, path: &str, method: &Method) -> Response<OriginBody> {
    let (body, content_type, cache) = match page.libraries.served(path) {
        Some(lib) => (
            lib.body.clone().unwrap_or_default(),
            "text/javascript; charset=utf-8",
            // The URL carries the file's digest (`?v=`), so it never changes under a name.
            "public, max-age=31536000, immutable",
        ),
        None => (page.html.clone(), "text/html; charset=utf-8", "no-cache"),
    };
    let mut head =
        crate::http::response::error_head("", &HeaderValue::from_static(cache), SystemTime::now());
    let h = &mut head;
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page URL may carry a signed link's token: never send it on as a Referer.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, page.csp.clone());
    let body = match *method {
        Method::HEAD => OriginBody::Empty,
        _ => OriginBody::Bytes(Some(body)),
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
        let p = super::page("/vid\"eo", Default::default());
        let p = std::str::from_utf8(&p.html).unwrap();
        assert!(p.contains("/vid&quot;eo"));
        assert!(!p.contains("{{MOUNT}}"));
    }
}
