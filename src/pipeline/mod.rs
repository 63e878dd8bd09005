//! The public video pipeline: [`serve_asset`] is one call per step, in the order of the
//! product picture.
//!
//! 1. [`resolve`]: decode the path once, refuse climbing paths (400) and dotfiles (404).
//! 2. [`verify`]: signed-link rules, before anything is looked up (403; spec http-origin K-3).
//! 3. [`lookup`]: the storage backend's resource: size, mtime, content-hash ETag (404/503).
//! 4. [`decide`]: preconditions, then Range (pure, `http::response::decide`).
//! 5. [`head`]: status and headers with the resource's cache policy.
//! 6. [`stream`]: a shedding slot and the bounded body (nothing for HEAD, 304 or errors).

#![allow(clippy::result_large_err)]

use std::time::SystemTime;

use http::header::{self, HeaderMap};
use http::{Method, Response, StatusCode};

use crate::app::App;
use crate::http::cache_policy::ResponseClass;
use crate::http::conditional::{effective_last_modified, ConditionalHeaders};
use crate::http::multipart::random_boundary;
use crate::http::response::{
    build_head, build_wire_head, decide as decide_pure, error_text, Decision, RangeOptions,
    Resource, WireHead, WireSlot,
};
use crate::observe::access_log::AccessNote;
use crate::observe::metrics::Metrics;
use crate::reply::{error_response, not_found, with_head, NO_STORE, PRIVATE_NO_STORE};
use crate::signing::access::{Access, TokenRequest};
use crate::storage::body::{OriginBody, Segment};
use crate::storage::path::{self, AssetPath, PathRejection};
use crate::storage::{Backend, LookupError, Object, Stored};

/// Where a request points, as received.
pub struct Target<'a> {
    /// The whole URL path, still percent-encoded (what signed links are checked against).
    pub raw_path: &'a str,
    /// The raw query string (token parameters live here; never logged, never in cache keys).
    pub query: &'a str,
    /// The URL path after the mount prefix, still percent-encoded.
    pub asset: &'a str,
    /// The client address (resolved through trusted proxies).
    pub client: std::net::IpAddr,
    /// The `Cookie` field values (a VO1 token may come as a cookie; never logged).
    pub cookies: Vec<&'a str>,
}

impl Target<'_> {
    /// What a token in this request is checked against, at `now`.
    fn token_request(&self, now: SystemTime) -> TokenRequest<'_> {
        TokenRequest {
            raw_path: self.raw_path,
            query: self.query,
            client: Some(self.client),
            now: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            cookies: &self.cookies,
        }
    }
}

/// A step's result, or the early answer that ends the pipeline (a whole response, returned
/// as is: 404s and 304-free refusals are common enough not to box them).
type Step<T> = Result<T, Response<OriginBody>>;

/// Serves one GET/HEAD for `target` received at `now`. What the access log should say beyond
/// the status goes into `note` (handed down, not attached to the response: an extension map
/// costs allocations on every request).
pub async fn serve_asset(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    target: &Target<'_>,
    note: &mut AccessNote,
    wire: &mut WireSlot,
    now: SystemTime,
) -> Response<OriginBody> {
    let wire_wanted = wire.wanted;
    let answer = async {
        let asset = resolve(app, target, now)?;
        let access = verify(app, &asset, target, now, note)?;
        // A remote store's version can be replaced between lookup and read: then once more.
        let mut second = false;
        loop {
            let object = lookup(app, &asset, now).await?;
            if let Some(resp) =
                playlist(app, method, headers, &asset, access, &object, target, now).await
            {
                return Ok((resp, None));
            }
            // Worked out once: decide and head both describe it.
            let representation = resource(&object, now);
            let decision = decide(app, method, headers, &representation, now);
            let (status, head, kept) = head(
                app,
                &asset,
                access,
                &decision,
                &representation,
                note,
                wire_wanted,
                now,
            );
            let body =
                match stream(app, method, &decision, &object, status, target.client, now).await {
                    Ok(body) => body,
                    Err(Stop::Changed) if !second => {
                        second = true;
                        continue;
                    }
                    Err(Stop::Changed) => return Err(crate::reply::unavailable(1, now)),
                    Err(Stop::Answer(r)) => return Err(r),
                };
            return Ok((with_head(status, head, body), kept));
        }
    };
    match answer.await {
        Ok((response, kept)) => {
            // Only with the response the head was built for.
            wire.head = kept;
            response
        }
        Err(early) => early,
    }
}

/// Largest playlist rewritten for a token (bigger ones are served as they are).
const MAX_PLAYLIST: u64 = 16 << 20;

/// A playlist (HLS) or MPD (DASH) requested with a VO1 prefix token or an Akamai ACL token: served with the token passed on to every URI
/// inside the token's scope (`http::manifest`), as a per-viewer representation: `private,
/// no-store`, its own strong ETag (the rewritten bytes' digest, never the file's), exact
/// `Content-Length`, preconditions and Range evaluated against it. `None`: not such a request,
/// or a playlist that does not parse (served unchanged, with a warning).
#[allow(clippy::too_many_arguments)]
async fn playlist(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    asset: &AssetPath,
    access: Access,
    object: &Object,
    target: &Target<'_>,
    now: SystemTime,
) -> Option<Response<OriginBody>> {
    use http_body_util::BodyExt;
    let rewrite = match asset.as_str().rsplit_once('.').map(|(_, ext)| ext) {
        Some("m3u8") => crate::http::manifest::rewrite_hls,
        Some("mpd") => crate::http::manifest::rewrite_dash,
        _ => return None,
    };
    if !matches!(access, Access::Granted { .. }) || object.len() > MAX_PLAYLIST {
        return None;
    }
    let request = target.token_request(now);
    let (scope, token) = app
        .access
        .native_prefix(&request)
        .or_else(|| app.access.akamai_prefix(&request))?;
    let whole = vec![Segment::File {
        start: 0,
        end: object.len(),
    }];
    let original = match app.store.body(object, whole).await {
        Ok(body) => body.collect().await.ok()?.to_bytes(),
        Err(_) => return None,
    };
    let path = crate::signing::canonical_path(target.raw_path).ok()?;
    let rewritten = match rewrite(&original, &path, &scope, &token) {
        Ok(bytes) => bytes::Bytes::from(bytes),
        Err(why) => {
            tracing::warn!(path = asset.as_str(), reason = ?why, "playlist not rewritten: served as stored");
            return None;
        }
    };
    use sha2::Digest;
    let digest: [u8; 32] = sha2::Sha256::digest(&rewritten).into();
    let etag = crate::http::etag::EntityTag::from_digest(&digest);
    let representation = Resource {
        len: rewritten.len() as u64,
        etag: Some(&etag),
        last_modified: effective_last_modified(object.modified(), now),
        content_type: object.content_type(),
    };
    let (ranges, cond) = range_and_conditions(headers);
    let decision = decide_pure(
        method == Method::GET,
        ranges.lines(),
        &cond,
        &representation,
        RangeOptions {
            max_ranges: app.settings.ranges.max_ranges,
            coalesce_gap: app.settings.ranges.coalesce_gap,
        },
        now,
        random_boundary,
    );
    let policy = vec![(header::CACHE_CONTROL, PRIVATE_NO_STORE.clone())];
    let (status, head) = build_head(&decision, &representation, &policy, now);
    let body = if method != Method::GET {
        OriginBody::Empty
    } else {
        let slice = |start: u64, end: u64| rewritten.slice(start as usize..end as usize);
        match &decision {
            Decision::Full => OriginBody::Bytes(Some(rewritten.clone())),
            Decision::Partial(r) => OriginBody::Bytes(Some(slice(r.start, r.end + 1))),
            Decision::Multipart(plan) => {
                let mut all = bytes::BytesMut::new();
                for part in &plan.parts {
                    all.extend_from_slice(&part.head);
                    all.extend_from_slice(&slice(part.range.start, part.range.end + 1));
                }
                all.extend_from_slice(&plan.tail);
                OriginBody::Bytes(Some(all.freeze()))
            }
            Decision::PreconditionFailed | Decision::RangeNotSatisfiable => {
                OriginBody::text(error_text(status))
            }
            _ => OriginBody::Empty,
        }
    };
    Some(with_head(status, head, body))
}

/// Why step 6 gave no body. (Rare, and the response is moved out at once: not boxed.)
#[allow(clippy::large_enum_variant)]
enum Stop {
    /// The version was replaced before its bytes were read.
    Changed,
    /// An answer that ends the pipeline (503).
    Answer(Response<OriginBody>),
}

/// Step 1: the normalized asset path.
fn resolve(app: &App, target: &Target<'_>, now: SystemTime) -> Step<AssetPath> {
    path::normalize(target.asset).map_err(|rejection| match rejection {
        PathRejection::BadRequest(reason) => {
            tracing::debug!(path = target.asset, reason, "path rejected");
            error_response(
                StatusCode::BAD_REQUEST,
                &format!("bad request: {reason}\n"),
                &NO_STORE,
                now,
            )
        }
        PathRejection::NotFound => not_found(&app.policy, target.asset, now),
    })
}

/// Step 2: the signed-link check, before the file is looked up, so a refused request learns
/// nothing about what exists (spec http-origin §2.3 step 0, K-3).
fn verify(
    app: &App,
    asset: &AssetPath,
    target: &Target<'_>,
    now: SystemTime,
    note: &mut AccessNote,
) -> Step<Access> {
    let token_request = target.token_request(now);
    match app.access.check(asset.as_str(), &token_request) {
        Ok(access) => {
            if matches!(access, Access::Granted { .. }) {
                note.token = Some("ok");
                Metrics::count_result(&app.metrics.tokens, "ok");
            }
            Ok(access)
        }
        Err(rejection) => {
            let reason = rejection.reason.as_str();
            Metrics::count_result(&app.metrics.tokens, reason);
            tracing::info!(
                path = asset.as_str(),
                reason,
                detail = rejection.detail.as_str(),
                "signed link refused"
            );
            note.token = Some(reason);
            Err(error_response(
                StatusCode::FORBIDDEN,
                &format!("{reason}\n"),
                &NO_STORE,
                now,
            ))
        }
    }
}

/// Step 3: the resource, from the storage backend.
async fn lookup(app: &App, asset: &AssetPath, now: SystemTime) -> Step<Object> {
    app.store.lookup(asset).await.map_err(|e| match e {
        LookupError::NotFound => not_found(&app.policy, asset.as_str(), now),
        LookupError::Exhausted(e) => {
            app.metrics.fd_exhaustion.inc();
            tracing::error!(error = %e, "out of file descriptors");
            crate::reply::unavailable(1, now)
        }
        LookupError::Failed(e) => {
            tracing::error!(path = asset.as_str(), error = %e, "cannot open asset");
            crate::reply::unavailable(1, now)
        }
        // Lookups see the current version; only a read can find it replaced.
        LookupError::Changed => crate::reply::unavailable(1, now),
    })
}

/// What the client is told about `object` at `now`.
fn resource(object: &Object, now: SystemTime) -> Resource<'_> {
    Resource {
        len: object.len(),
        etag: object.etag(),
        last_modified: effective_last_modified(object.modified(), now),
        content_type: object.content_type(),
    }
}

/// Step 4: preconditions, then Range (pure).
fn decide(
    app: &App,
    method: &Method,
    headers: &HeaderMap,
    representation: &Resource<'_>,
    now: SystemTime,
) -> Decision {
    let (ranges, cond) = range_and_conditions(headers);
    let opts = RangeOptions {
        max_ranges: app.settings.ranges.max_ranges,
        coalesce_gap: app.settings.ranges.coalesce_gap,
    };
    decide_pure(
        method == Method::GET,
        ranges.lines(),
        &cond,
        representation,
        opts,
        now,
        random_boundary,
    )
}

/// Step 5: status and headers, with the cache policy (or `private, no-store` for a response
/// the origin verified: no shared cache may store it, K-1, H-19). When the writer takes heads
/// in wire form and this thread has this one kept, that instead, with an empty map.
#[allow(clippy::too_many_arguments)]
fn head(
    app: &App,
    asset: &AssetPath,
    access: Access,
    decision: &Decision,
    representation: &Resource<'_>,
    note: &mut AccessNote,
    wire_wanted: bool,
    now: SystemTime,
) -> (StatusCode, HeaderMap, Option<WireHead>) {
    let policy = match access {
        Access::Granted {
            edge_verified: false,
        } => vec![(header::CACHE_CONTROL, PRIVATE_NO_STORE.clone())].into(),
        _ => {
            let (headers, rule) = app.policy.apply(asset.as_str(), ResponseClass::Success);
            note.cache_rule = rule;
            headers
        }
    };
    if wire_wanted {
        if let Some((status, kept)) = build_wire_head(decision, representation, &policy, now) {
            // Empty, and without room: fields a caller adds (CORS) go after the kept ones.
            return (status, HeaderMap::new(), Some(kept));
        }
    }
    let (status, map) = build_head(decision, representation, &policy, now);
    (status, map, None)
}

/// The byte ranges of the object a GET's body is made of, if any.
fn segments(decision: &Decision, object: &Object) -> Option<Vec<Segment>> {
    match decision {
        Decision::Full if !object.is_empty() => Some(vec![Segment::File {
            start: 0,
            end: object.len(),
        }]),
        Decision::Partial(r) => Some(vec![Segment::File {
            start: r.start,
            end: r.end + 1,
        }]),
        Decision::Multipart(plan) => {
            let mut segs = Vec::with_capacity(plan.parts.len() * 2 + 1);
            for part in &plan.parts {
                segs.push(Segment::Bytes(part.head.clone()));
                segs.push(Segment::File {
                    start: part.range.start,
                    end: part.range.end + 1,
                });
            }
            segs.push(Segment::Bytes(plan.tail.clone()));
            Some(segs)
        }
        _ => None,
    }
}

/// Step 6: the body. Only responses that stream stored bytes take a shedding slot; a refused
/// one is a 503 with `Retry-After` (nothing was sent yet).
async fn stream(
    app: &App,
    method: &Method,
    decision: &Decision,
    object: &Object,
    status: StatusCode,
    client: std::net::IpAddr,
    now: SystemTime,
) -> Result<OriginBody, Stop> {
    if method != Method::GET {
        return Ok(OriginBody::Empty);
    }
    let Some(segs) = segments(decision, object) else {
        return Ok(match decision {
            Decision::PreconditionFailed | Decision::RangeNotSatisfiable => {
                OriginBody::text(error_text(status))
            }
            _ => OriginBody::Empty,
        });
    };
    match app.streams.acquire_or_wait(client).await {
        Ok(permit) => match app.store.body(object, segs).await {
            Ok(body) => Ok(body.holding(permit)),
            Err(LookupError::Changed) => Err(Stop::Changed),
            Err(e) => {
                tracing::error!(error = ?e, "cannot read the stored bytes");
                Err(Stop::Answer(crate::reply::unavailable(1, now)))
            }
        },
        Err(shed) => {
            Metrics::count(&app.metrics.shed, shed.as_str());
            tracing::warn!(%client, reason = shed.as_str(), active = app.streams.active(), "stream shed");
            Err(Stop::Answer(crate::reply::unavailable(
                app.settings.limits.retry_after_secs,
                now,
            )))
        }
    }
}

/// A request's first two Range lines: a second line is enough to ignore them all, so
/// no list is allocated for them.
#[derive(Default)]
struct RangeLines<'a> {
    kept: [&'a [u8]; 2],
    count: usize,
}

impl<'a> RangeLines<'a> {
    fn push(&mut self, line: &'a [u8]) {
        if let Some(slot) = self.kept.get_mut(self.count) {
            *slot = line;
            self.count += 1;
        }
    }

    fn lines(&self) -> &[&'a [u8]] {
        &self.kept[..self.count]
    }
}

/// The request's Range lines and precondition fields, in one pass over its fields (a request
/// has a handful; six lookups by name would hash six names for mostly absent fields).
fn range_and_conditions(h: &HeaderMap) -> (RangeLines<'_>, ConditionalHeaders<'_>) {
    let mut ranges = RangeLines::default();
    let mut cond = ConditionalHeaders::default();
    for (name, value) in h {
        let list = match *name {
            header::RANGE => {
                ranges.push(value.as_bytes());
                continue;
            }
            header::IF_MATCH => &mut cond.if_match,
            header::IF_NONE_MATCH => &mut cond.if_none_match,
            header::IF_MODIFIED_SINCE => &mut cond.if_modified_since,
            header::IF_UNMODIFIED_SINCE => &mut cond.if_unmodified_since,
            header::IF_RANGE => &mut cond.if_range,
            _ => continue,
        };
        // Valid UTF-8 (nearly always) is borrowed after the fast check; the lossy walk only
        // for the rest.
        list.push(match std::str::from_utf8(value.as_bytes()) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(value.as_bytes()),
        });
    }
    (ranges, cond)
}
