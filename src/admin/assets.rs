//! Replacing and deleting assets atomically.
//!
//! PUT streams the body to a temporary dotfile (never served) in the target's folder, fsyncs
//! it, renames it over the target and fsyncs the folder: a reader opens either the old inode or
//! the new one, never a mix, and a crash leaves one of the two. A failed, oversized or aborted
//! upload removes the temporary file (also when the request is dropped mid-body) and leaves the
//! old file untouched. Then the metadata caches are evicted, the digest recomputed, and the
//! public path invalidated on the CDN.
//!
//! On the s3 backend the same calls stream into the bucket (`storage::s3::upload`): the old
//! object stays until the new one is complete, and nothing partial is ever visible.

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use super::{error, invalidate, json, Invalidation};
use crate::app::App;
use crate::storage::body::OriginBody;
use crate::storage::local::beneath::{upload_temp_name, Beneath, Folder, WriteRefusal};
use crate::storage::local::open::OpenError;
use crate::storage::path::{normalize, AssetPath, PathRejection};
use crate::storage::s3::client::StoreError;
use crate::storage::s3::S3Store;
use crate::storage::Backend;

/// Removes the temporary file unless the upload completed (covers early returns and a request
/// future dropped when the client goes away).
struct TempFile<'a> {
    folder: &'a Folder,
    name: Option<String>,
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            self.folder.discard(&name);
        }
    }
}

/// The asset path to write, or the reason it is refused (answered with 400).
fn asset_path(raw: &str) -> Result<AssetPath, String> {
    normalize(raw).map_err(|r| match r {
        PathRejection::BadRequest(reason) => format!("path: {reason}"),
        PathRejection::NotFound => "path: hidden or empty paths cannot be written".to_string(),
    })
}

/// The folder of `asset` under the root, opened beneath it (created if `create`).
async fn folder(app: &App, asset: &AssetPath, create: bool) -> Result<Folder, WriteRefusal> {
    let Some(local) = app.store.local() else {
        return Err(WriteRefusal::Io(std::io::Error::other(
            "not the fs backend",
        )));
    };
    let root = local.root.clone();
    let a = asset.clone();
    tokio::task::spawn_blocking(move || {
        Beneath::open(&root)
            .map_err(WriteRefusal::Io)?
            .folder(&a, create)
    })
    .await
    .map_err(|e| WriteRefusal::Io(std::io::Error::other(e)))?
}

fn url_path(app: &App, asset: &AssetPath) -> String {
    format!("{}/{}", app.settings.assets.mount, asset.as_str())
}

pub async fn put(
    app: &App,
    who: &str,
    raw: &str,
    do_invalidate: bool,
    body: super::AdminBody,
) -> http::Response<OriginBody> {
    let asset = match asset_path(raw) {
        Ok(a) => a,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    // Held until the upload ends (or the request is dropped).
    let Ok(_slot) = app.uploads.try_acquire() else {
        tracing::warn!(target: "audit", who, action = "replace", path = asset.as_str(), outcome = "busy");
        let limit = app.settings.admin.max_concurrent_uploads;
        return retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("too many uploads in progress (admin.max_concurrent_uploads = {limit}); retry later"),
            ),
            5,
        );
    };
    if let Some(s3) = app.store.s3() {
        return put_s3(app, s3, who, asset, do_invalidate, body).await;
    }
    let folder = match folder(app, &asset, true).await {
        Ok(f) => f,
        Err(WriteRefusal::Io(e)) => {
            tracing::error!(path = asset.as_str(), error = %e, "cannot open the upload folder");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot open the folder");
        }
        Err(why) => {
            tracing::warn!(target: "audit", who, action = "replace", path = asset.as_str(), outcome = "refused", reason = %why);
            return error(StatusCode::BAD_REQUEST, &format!("path: {why}"));
        }
    };
    let name = folder.name.clone();
    let existed = match folder.kind(&name) {
        Some(rustix::fs::FileType::Directory) => {
            return error(StatusCode::CONFLICT, "path is a folder")
        }
        Some(_) => true,
        None => false,
    };
    let tmp_name = upload_temp_name(&name);
    let file = match folder.create_locked(&tmp_name) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = asset.as_str(), error = %e, "cannot create upload file");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot create the upload file",
            );
        }
    };
    let mut guard = TempFile {
        folder: &folder,
        name: Some(tmp_name.clone()),
    };
    let mut file = tokio::fs::File::from_std(file);
    let limit = app.settings.admin.max_upload_bytes;
    let mut size = 0u64;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(target: "audit", who, action = "replace", path = asset.as_str(), outcome = "aborted", error = %e);
                return error(
                    StatusCode::BAD_REQUEST,
                    "upload aborted; the old file is unchanged",
                );
            }
        };
        if let Some(data) = frame.data_ref() {
            size += data.len() as u64;
            if size > limit {
                tracing::warn!(target: "audit", who, action = "replace", path = asset.as_str(), outcome = "too-large");
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("upload larger than admin.max_upload_bytes ({limit})"),
                );
            }
            if let Err(e) = file.write_all(data).await {
                tracing::error!(path = asset.as_str(), error = %e, "upload write failed");
                return error(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "cannot write the upload; the old file is unchanged",
                );
            }
        }
    }
    if let Err(e) = async {
        file.flush().await?;
        file.sync_all().await?;
        // The lock goes with the descriptor; the rename makes the file visible.
        drop(file);
        folder.commit(&tmp_name, &name)
    }
    .await
    {
        tracing::error!(path = asset.as_str(), error = %e, "cannot commit upload");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot commit the upload; the old file is unchanged",
        );
    }
    guard.name = None; // renamed: nothing to clean up
    drop(guard);
    app.store.evict(asset.as_str()).await;
    let Some(local) = app.store.local() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "not the fs backend");
    };
    let meta = match local.open(&asset, true).await {
        Ok(opened) => opened.meta,
        Err(e) => {
            let why = match e {
                OpenError::Io(e) => e.to_string(),
                _ => "not readable after rename".into(),
            };
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("replaced, but cannot read it back: {why}"),
            );
        }
    };
    let etag = meta.etag().map(ToString::to_string);
    replaced(app, who, &asset, size, etag, existed, do_invalidate).await
}

/// The answer to a delete that landed: the CDN invalidation (if asked), the audit line, 200.
async fn deleted(
    app: &App,
    who: &str,
    asset: &AssetPath,
    do_invalidate: bool,
) -> http::Response<OriginBody> {
    let mut result =
        serde_json::json!({"path": asset.as_str(), "deleted": true, "invalidation": null});
    if do_invalidate {
        let inv = invalidate(app, &[url_path(app, asset)]).await;
        result["invalidation"] = inv.to_json();
        if let Invalidation::NotDurable(_, why) = &inv {
            tracing::error!(target: "audit", who, action = "delete", path = asset.as_str(), outcome = "deleted, invalidation queued in memory only", error = why.as_str());
            return json(StatusCode::SERVICE_UNAVAILABLE, result);
        }
    }
    tracing::info!(target: "audit", who, action = "delete", path = asset.as_str(), outcome = "ok");
    json(StatusCode::OK, result)
}

/// The answer to a replace that landed: the CDN invalidation (if asked), the audit line, and
/// `200` (replaced) or `201` (created) with the new ETag.
async fn replaced(
    app: &App,
    who: &str,
    asset: &AssetPath,
    size: u64,
    etag: Option<String>,
    existed: bool,
    do_invalidate: bool,
) -> http::Response<OriginBody> {
    let mut result = serde_json::json!({
        "path": asset.as_str(),
        "etag": etag,
        "size": size,
        "invalidation": null,
    });
    if do_invalidate {
        let inv = invalidate(app, &[url_path(app, asset)]).await;
        result["invalidation"] = inv.to_json();
        if let Invalidation::NotDurable(_, why) = &inv {
            tracing::error!(target: "audit", who, action = "replace", path = asset.as_str(), size, outcome = "replaced, invalidation queued in memory only", error = why.as_str());
            return json(StatusCode::SERVICE_UNAVAILABLE, result);
        }
    }
    tracing::info!(target: "audit", who, action = "replace", path = asset.as_str(), size, etag = etag.unwrap_or_default(), outcome = "ok");
    json(
        if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        result,
    )
}

pub async fn delete(
    app: &App,
    who: &str,
    raw: &str,
    do_invalidate: bool,
) -> http::Response<OriginBody> {
    let asset = match asset_path(raw) {
        Ok(a) => a,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    if let Some(s3) = app.store.s3() {
        return delete_s3(app, s3, who, asset, do_invalidate).await;
    }
    // Resolved and removed on one folder descriptor beneath the root: a folder swapped for a
    // symlink meanwhile cannot redirect the unlink.
    let removed = match folder(app, &asset, false).await {
        Ok(f) => tokio::task::spawn_blocking(move || f.remove(&f.name.clone()))
            .await
            .unwrap_or_else(|e| Err(WriteRefusal::Io(std::io::Error::other(e)))),
        Err(e) => Err(e),
    };
    match removed {
        Ok(()) => {}
        Err(WriteRefusal::Io(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot delete: {}", e.kind()),
            )
        }
        Err(_) => return error(StatusCode::NOT_FOUND, "no such asset"),
    }
    app.store.evict(asset.as_str()).await;
    deleted(app, who, &asset, do_invalidate).await
}

/// The answer to a store failure during an admin write: 503 with `Retry-After` when the store
/// is unreachable or throttling, 502 for any other error of the store; the code is named.
fn store_failure(e: &StoreError, what: &str) -> http::Response<OriginBody> {
    let mut r = error(
        match e {
            StoreError::Failed {
                reachable: false, ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Failed { code, .. } if code == "SlowDown" || code.starts_with("HTTP 5") => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_GATEWAY,
        },
        &format!("{what}; the old object is unchanged: object store said {e}"),
    );
    if r.status() == StatusCode::SERVICE_UNAVAILABLE {
        r = retry_after(r, 1);
    }
    r
}

/// `r` with `Retry-After: secs`.
fn retry_after(mut r: http::Response<OriginBody>, secs: u64) -> http::Response<OriginBody> {
    r.headers_mut()
        .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
    r
}

async fn put_s3(
    app: &App,
    s3: &S3Store,
    who: &str,
    asset: AssetPath,
    do_invalidate: bool,
    mut body: super::AdminBody,
) -> http::Response<OriginBody> {
    let existed = match s3.head(asset.as_str()).await {
        Ok(_) => true,
        Err(StoreError::NotFound) => false,
        Err(e) => return store_failure(&e, "cannot check the object"),
    };
    let limit = app.settings.admin.max_upload_bytes;
    // Dropped on any early return (or with the request): the multipart upload is aborted.
    let mut upload = s3.upload(asset.as_str());
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(target: "audit", who, action = "replace", path = asset.as_str(), outcome = "aborted", error = %e);
                return error(
                    StatusCode::BAD_REQUEST,
                    "upload aborted; the old object is unchanged",
                );
            }
        };
        if let Some(data) = frame.data_ref() {
            if upload.size() + data.len() as u64 > limit {
                tracing::warn!(target: "audit", who, action = "replace", path = asset.as_str(), outcome = "too-large");
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("upload larger than admin.max_upload_bytes ({limit})"),
                );
            }
            if let Err(e) = upload.write(data).await {
                tracing::error!(target: "audit", who, action = "replace", path = asset.as_str(), outcome = "store failed", error = %e);
                return store_failure(&e, "cannot upload");
            }
        }
    }
    let size = upload.size();
    let stored = match upload.finish().await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(target: "audit", who, action = "replace", path = asset.as_str(), outcome = "store failed", error = %e);
            return store_failure(&e, "cannot complete the upload");
        }
    };
    s3.evict(asset.as_str()).await;
    let etag = stored.etag.as_ref().map(ToString::to_string);
    replaced(app, who, &asset, size, etag, existed, do_invalidate).await
}

async fn delete_s3(
    app: &App,
    s3: &S3Store,
    who: &str,
    asset: AssetPath,
    do_invalidate: bool,
) -> http::Response<OriginBody> {
    match s3.delete(asset.as_str()).await {
        Ok(()) => {}
        Err(StoreError::NotFound) => return error(StatusCode::NOT_FOUND, "no such asset"),
        Err(e) => return store_failure(&e, "cannot delete"),
    }
    s3.evict(asset.as_str()).await;
    deleted(app, who, &asset, do_invalidate).await
}
