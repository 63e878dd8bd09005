//! Replacing and deleting assets atomically.
//!
//! PUT streams the body to a temporary dotfile (never served) in the target's folder, fsyncs
//! it, renames it over the target and fsyncs the folder: a reader opens either the old inode or
//! the new one, never a mix, and a crash leaves one of the two. A failed, oversized or aborted
//! upload removes the temporary file (also when the request is dropped mid-body) and leaves the
//! old file untouched. Then the metadata caches are evicted, the digest recomputed, and the
//! public path invalidated on the CDN.

use std::path::{Path, PathBuf};

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use super::{aws_failure, error, invalidate, json};
use crate::storage::body::OriginBody;
use crate::storage::path::{normalize, open_under_root, AssetPath, OpenError, PathRejection};
use crate::App;

/// Removes the temporary file unless the upload completed (covers early returns and a request
/// future dropped when the client goes away).
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
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

/// The parent folder of `asset`, created if needed, proven to be inside the root.
async fn parent_inside_root(root: &Path, asset: &AssetPath) -> Result<PathBuf, String> {
    let target = root.join(asset.as_str());
    let parent = target.parent().ok_or("no parent folder")?.to_path_buf();
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(|e| format!("cannot create folder: {}", e.kind()))?;
    let real = tokio::fs::canonicalize(&parent)
        .await
        .map_err(|e| format!("cannot resolve folder: {}", e.kind()))?;
    if !real.starts_with(root) {
        return Err("folder resolves outside the asset root".into());
    }
    Ok(real)
}

fn url_path(app: &App, asset: &AssetPath) -> String {
    format!("{}/{}", app.settings.assets.mount, asset.as_str())
}

pub async fn put(
    app: &App,
    who: &str,
    raw: &str,
    do_invalidate: bool,
    body: hyper::body::Incoming,
) -> http::Response<OriginBody> {
    let asset = match asset_path(raw) {
        Ok(a) => a,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let root = app.store.root.as_path().to_path_buf();
    let folder = match parent_inside_root(&root, &asset).await {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("path: {e}")),
    };
    let name = asset
        .as_str()
        .rsplit('/')
        .next()
        .unwrap_or("asset")
        .to_owned();
    let target = folder.join(&name);
    if tokio::fs::metadata(&target).await.is_ok_and(|m| m.is_dir()) {
        return error(StatusCode::CONFLICT, "path is a folder");
    }
    let existed = tokio::fs::symlink_metadata(&target).await.is_ok();
    let tmp_path = folder.join(format!(
        ".{name}.upload-{}",
        &crate::http::multipart::random_boundary()[..12]
    ));
    let mut guard = TempFile(Some(tmp_path.clone()));
    let mut file = match tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp_path)
        .await
    {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(path = asset.as_str(), error = %e, "cannot create upload file");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot create the upload file",
            );
        }
    };
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
        drop(file);
        tokio::fs::rename(&tmp_path, &target).await?;
        // The rename is durable only once the folder itself is synced.
        let dir = tokio::fs::File::open(&folder).await?;
        dir.sync_all().await
    }
    .await
    {
        tracing::error!(path = asset.as_str(), error = %e, "cannot commit upload");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot commit the upload; the old file is unchanged",
        );
    }
    guard.0 = None; // renamed: nothing to clean up
    app.store.evict(asset.as_str()).await;
    let meta = match app.store.open(&asset).await {
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
    let mut result = serde_json::json!({
        "path": asset.as_str(),
        "etag": meta.etag.to_string(),
        "size": meta.len(),
        "invalidation": null,
    });
    if do_invalidate {
        match invalidate(app, &[url_path(app, &asset)]).await {
            Ok(inv) => result["invalidation"] = serde_json::to_value(inv).unwrap_or_default(),
            Err(e) => {
                tracing::error!(target: "audit", who, action = "replace", path = asset.as_str(), size, outcome = "replaced, invalidation failed", code = %e.code);
                return aws_failure(&e, result);
            }
        }
    }
    tracing::info!(target: "audit", who, action = "replace", path = asset.as_str(), size, etag = %meta.etag, outcome = "ok");
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
    let root = app.store.root.clone();
    let a = asset.clone();
    // Prove the path is an existing file inside the root before removing anything.
    match tokio::task::spawn_blocking(move || open_under_root(&root, &a)).await {
        Ok(Ok(_)) => {}
        Ok(Err(OpenError::NotFound)) | Ok(Err(OpenError::Escapes(_))) => {
            return error(StatusCode::NOT_FOUND, "no such asset")
        }
        Ok(Err(OpenError::Io(e))) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot open: {}", e.kind()),
            )
        }
        Err(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot open"),
    }
    if let Err(e) = tokio::fs::remove_file(app.store.root.join(asset.as_str())).await {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot delete: {}", e.kind()),
        );
    }
    app.store.evict(asset.as_str()).await;
    let mut result =
        serde_json::json!({"path": asset.as_str(), "deleted": true, "invalidation": null});
    if do_invalidate {
        match invalidate(app, &[url_path(app, &asset)]).await {
            Ok(inv) => result["invalidation"] = serde_json::to_value(inv).unwrap_or_default(),
            Err(e) => {
                tracing::error!(target: "audit", who, action = "delete", path = asset.as_str(), outcome = "deleted, invalidation failed", code = %e.code);
                return aws_failure(&e, result);
            }
        }
    }
    tracing::info!(target: "audit", who, action = "delete", path = asset.as_str(), outcome = "ok");
    json(StatusCode::OK, result)
}
