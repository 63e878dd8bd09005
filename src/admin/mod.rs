//! The admin API, on its own listener (never the public port).
//!
//! Every `/admin/...` route needs `Authorization: Bearer <token>`; tokens are compared in
//! constant time against each configured one, and only the matching token's *id* is logged.
//! Bodies are JSON, size-limited; malformed JSON or wrong fields are a 400 that names the
//! field. Responses carry `Cache-Control: private, no-store`.

pub mod assets;

use std::net::IpAddr;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;

use crate::app::App;
use crate::reply::{json, json_error as error};
use crate::signing::links::{CookieOptions, LinkFormat, LinkRequest, SameSite};
use crate::storage::body::OriginBody;
use crate::storage::Backend;

/// The request body the admin API reads (any body, boxed by `routes::admin`; its errors become
/// `io::Error`s, a concrete type the body combinators take without lifetime trouble).
pub type AdminBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The id of the bearer token presented, if it matches a configured one.
fn authenticate<B>(app: &App, req: &Request<B>) -> Option<String> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    // Compare digests so that length differences leak nothing either; check every token.
    use sha2::Digest;
    let p = sha2::Sha256::digest(presented.as_bytes());
    let mut found = None;
    for (id, token) in &app.settings.admin.tokens {
        let t = sha2::Sha256::digest(token.expose().as_bytes());
        if crate::signing::ct_eq(&p, &t) && found.is_none() {
            found = Some(id.clone());
        }
    }
    found
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignBody {
    path: String,
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    prefix: bool,
    #[serde(default)]
    ip: Option<std::net::IpAddr>,
    #[serde(default)]
    format: LinkFormat,
    /// Mint `Set-Cookie` values for the path's directory instead of a token in the URL.
    #[serde(default)]
    cookie: bool,
    #[serde(default)]
    cookie_domain: Option<String>,
    #[serde(default)]
    same_site: SameSite,
}

/// Answers one admin API request (everything on the admin listener but health, readiness
/// and metrics, which `routes::admin` answers without a token).
pub async fn api(app: &App, req: Request<AdminBody>, peer: IpAddr) -> Response<OriginBody> {
    let path = req.uri().path().to_owned();
    let Some(who) = authenticate(app, &req) else {
        tracing::warn!(target: "audit", %peer, path = path.as_str(), outcome = "unauthorized", "admin request refused");
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"video-origin admin\""),
        );
        return r;
    };
    // `?invalidate=false` on asset writes skips the CDN invalidation.
    let invalidate_cdn = !req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "invalidate=false"));
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/admin/sessions") => json(
            StatusCode::OK,
            serde_json::json!({ "sessions": app.sessions.list() }),
        ),
        (_, "/admin/sessions") => not_allowed("GET"),
        (Method::POST, "/admin/sign") => {
            let sign = match read_json::<SignBody>(app, req).await {
                Ok(s) => s,
                Err(r) => return r,
            };
            let request = LinkRequest {
                path: sign.path.clone(),
                ttl_secs: sign
                    .ttl_secs
                    .unwrap_or(app.settings.signing.default_ttl_secs),
                prefix: sign.prefix,
                ip: sign.ip,
                format: sign.format,
                cookie: sign.cookie.then(|| CookieOptions {
                    domain: sign.cookie_domain.clone(),
                    same_site: sign.same_site,
                }),
            };
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            match app.minter.mint(&request, now) {
                Ok(link) => {
                    tracing::info!(target: "audit", who = who.as_str(), action = "sign", path = sign.path.as_str(), prefix = sign.prefix, cookie = sign.cookie, format = ?sign.format, expires_at = link.expires_at, outcome = "ok");
                    let mut answer =
                        serde_json::json!({"url": link.url, "expires_at": link.expires_at});
                    if !link.set_cookie.is_empty() {
                        answer["set_cookie"] = link.set_cookie.into();
                    }
                    if let Some(w) = app.unprotected_warning(&sign.path) {
                        answer["warning"] = w.into();
                    }
                    json(StatusCode::OK, answer)
                }
                Err(reason) => {
                    tracing::info!(target: "audit", who = who.as_str(), action = "sign", path = sign.path.as_str(), outcome = "refused", reason = reason.as_str());
                    error(StatusCode::BAD_REQUEST, &reason)
                }
            }
        }
        (_, "/admin/sign") => not_allowed("POST"),
        (Method::POST, "/admin/invalidations") => {
            let body = match read_json::<InvalidateBody>(app, req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let paths = match crate::cdn::paths::to_cdn_paths(
                &body.paths,
                &app.settings.assets.mount,
                app.settings.invalidation.max_paths_per_request,
            ) {
                Ok(p) => p,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e),
            };
            match invalidate(app, &paths).await {
                Invalidation::Queued(jobs) => {
                    tracing::info!(target: "audit", who = who.as_str(), action = "invalidate", paths = ?paths, jobs = ?jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), outcome = "queued");
                    json(
                        StatusCode::ACCEPTED,
                        serde_json::json!({"paths": paths, "jobs": jobs}),
                    )
                }
                Invalidation::Disabled => disabled(),
                Invalidation::NotDurable(jobs, why) => {
                    tracing::error!(target: "audit", who = who.as_str(), action = "invalidate", paths = ?paths, error = why.as_str(), outcome = "queued in memory only");
                    json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        serde_json::json!({"paths": paths, "jobs": jobs, "error": why}),
                    )
                }
            }
        }
        (Method::GET, "/admin/invalidations") => match app.outbox.get() {
            None => disabled(),
            Some(outbox) => json(
                StatusCode::OK,
                serde_json::json!({"invalidations": outbox.list(500)}),
            ),
        },
        (Method::GET, p) if p.starts_with("/admin/invalidations/") => {
            let id = &p["/admin/invalidations/".len()..];
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalidation id must be letters and digits",
                );
            }
            let Some(outbox) = app.outbox.get() else {
                return disabled();
            };
            if let Some(job) = outbox.job(id) {
                return json(
                    StatusCode::OK,
                    serde_json::to_value(job).unwrap_or_default(),
                );
            }
            // A CloudFront invalidation id (what a job's `cdn_ref` names).
            match outbox.cloudfront().await {
                None => error(StatusCode::NOT_FOUND, "no such invalidation"),
                Some(cf) => match cf.get(id).await {
                    Ok(inv) => json(
                        StatusCode::OK,
                        serde_json::to_value(inv).unwrap_or_default(),
                    ),
                    Err(e) if e.code == "NoSuchInvalidation" => {
                        error(StatusCode::NOT_FOUND, "no such invalidation")
                    }
                    Err(e) => aws_failure(&e, serde_json::json!({})),
                },
            }
        }
        (_, "/admin/invalidations") => not_allowed("GET, POST"),
        (Method::PUT, p) if p.starts_with("/admin/assets/") => {
            let raw = p["/admin/assets/".len()..].to_owned();
            assets::put(app, &who, &raw, invalidate_cdn, req.into_body()).await
        }
        (Method::DELETE, p) if p.starts_with("/admin/assets/") => {
            let raw = p["/admin/assets/".len()..].to_owned();
            assets::delete(app, &who, &raw, invalidate_cdn).await
        }
        (_, p) if p.starts_with("/admin/assets/") => not_allowed("PUT, DELETE"),
        (Method::POST, "/admin/cache/evict") => {
            let body = match read_json::<EvictBody>(app, req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let mut evicted = Vec::new();
            for p in &body.paths {
                match crate::storage::path::normalize(p.trim_start_matches('/')) {
                    Ok(a) => {
                        app.store.evict(a.as_str()).await;
                        evicted.push(a.as_str().to_owned());
                    }
                    Err(_) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            &format!("paths: `{p}` is not a valid asset path"),
                        )
                    }
                }
            }
            tracing::info!(target: "audit", who = who.as_str(), action = "cache-evict", paths = ?evicted, outcome = "ok");
            json(StatusCode::OK, serde_json::json!({"evicted": evicted}))
        }
        (Method::GET, "/admin/cache/stats") => {
            let st = match app.store.local() {
                Some(l) => l.stats().await,
                None => Default::default(),
            };
            json(
                StatusCode::OK,
                serde_json::json!({
                    "entries": st.entries,
                    "hits": st.hits,
                    "misses": st.misses,
                    "digests_computed": st.digests_computed,
                    "digest_seconds": st.digest_seconds,
                    "open_files": app.store.local().map_or(0, |l| l.open_entries()),
                }),
            )
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin route"),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidateBody {
    paths: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvictBody {
    paths: Vec<String>,
}

fn not_allowed(allow: &'static str) -> Response<OriginBody> {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, &format!("allowed: {allow}"));
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn disabled() -> Response<OriginBody> {
    error(
        StatusCode::CONFLICT,
        "CDN invalidation is disabled (invalidation.enabled = false)",
    )
}

/// 502 with AWS's error code: the request was fine, the upstream call failed.
fn aws_failure(
    e: &crate::cdn::cloudfront::AwsError,
    mut extra: serde_json::Value,
) -> Response<OriginBody> {
    extra["error"] = serde_json::json!({"code": e.code, "message": e.message});
    json(StatusCode::BAD_GATEWAY, extra)
}

async fn read_json<T: serde::de::DeserializeOwned>(
    app: &App,
    req: Request<AdminBody>,
) -> Result<T, Response<OriginBody>> {
    let limit = app.settings.admin.max_body_bytes;
    let body = match http_body_util::Limited::new(req.into_body(), limit)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("body larger than {limit} bytes"),
            ))
        }
    };
    // The error names the field path (`paths`, `ttl_secs`, `paths[2]`) before serde's reason.
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body)).map_err(
        |e| {
            let at = e.path().to_string();
            let why = e.into_inner();
            let msg = if at == "." {
                format!("invalid JSON body: {why}")
            } else {
                format!("invalid JSON body: {at}: {why}")
            };
            error(StatusCode::BAD_REQUEST, &msg)
        },
    )
}

/// What became of an invalidation request.
pub(crate) enum Invalidation {
    /// In the journal: it will reach every configured CDN, whatever happens next.
    Queued(Vec<crate::cdn::outbox::Job>),
    /// Queued in memory, but the journal could not be written (the reason).
    NotDurable(Vec<crate::cdn::outbox::Job>, String),
    /// `invalidation.enabled = false`.
    Disabled,
}

impl Invalidation {
    /// The `"invalidation"` member of an asset write's answer.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            Invalidation::Queued(jobs) => serde_json::json!({ "jobs": jobs }),
            Invalidation::NotDurable(jobs, why) => {
                serde_json::json!({ "jobs": jobs, "error": why })
            }
            Invalidation::Disabled => serde_json::Value::Null,
        }
    }
}

/// Queues an invalidation of already-validated CDN paths in the outbox.
async fn invalidate(app: &App, paths: &[String]) -> Invalidation {
    let Some(outbox) = app.outbox.get() else {
        return Invalidation::Disabled;
    };
    match outbox.enqueue(paths).await {
        Ok(jobs) => Invalidation::Queued(jobs),
        Err((jobs, why)) => Invalidation::NotDurable(jobs, why),
    }
}
