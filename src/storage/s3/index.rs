//! `video-origin index` on the s3 backend: records the SHA-256 of every object that lacks it
//! (`sha256` metadata), so its ETag becomes the content digest that the fs backend and every
//! replica send. An object is read once (streamed, hashed), then copied onto itself with the
//! digest, only if its store ETag is still the one that was read: an object replaced meanwhile
//! is left alone (and counted).

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::client::StoreError;
use super::object::S3Object;
use super::{S3Store, Shared};

/// One object's outcome, for progress lines.
pub enum Indexed {
    /// Already carried its digest.
    Had,
    /// Digest computed and recorded.
    Recorded([u8; 32]),
    /// Replaced while it was being read: left to the new version's writer.
    Changed,
}

/// Totals of one run.
#[derive(Debug, Default, Clone, Copy)]
pub struct IndexSummary {
    pub objects: usize,
    pub recorded: usize,
    pub changed: usize,
    pub bytes_hashed: u64,
}

impl S3Store {
    /// Indexes every object under the prefix; `report(asset, outcome, size, done, total)` after
    /// each one.
    pub async fn index(
        &self,
        mut report: impl FnMut(&str, &Indexed, u64, usize, usize),
    ) -> Result<IndexSummary, StoreError> {
        let assets = self.list().await?;
        let mut summary = IndexSummary {
            objects: assets.len(),
            ..Default::default()
        };
        for (i, asset) in assets.iter().enumerate() {
            let shared = Arc::clone(&self.shared);
            let key = self.key(asset);
            let (outcome, size) = match self
                .run(async move {
                    let found = shared.head(&key).await?;
                    let size = found.len;
                    Ok((record(&shared, &found).await?, size))
                })
                .await
            {
                Ok(done) => done,
                // Deleted since the listing.
                Err(StoreError::NotFound) => continue,
                Err(e) => return Err(e),
            };
            match outcome {
                Indexed::Recorded(_) => {
                    summary.recorded += 1;
                    summary.bytes_hashed += size;
                }
                Indexed::Changed => summary.changed += 1,
                Indexed::Had => {}
            }
            report(asset, &outcome, size, i + 1, assets.len());
            self.evict(asset).await;
        }
        Ok(summary)
    }
}

async fn record(shared: &Shared, found: &S3Object) -> Result<Indexed, StoreError> {
    if found.digest.is_some() {
        return Ok(Indexed::Had);
    }
    let mut hasher = Sha256::new();
    if found.len > 0 {
        let mut body = match shared.get(found, 0, found.len).await {
            Ok(b) => b,
            Err(StoreError::Replaced) => return Ok(Indexed::Changed),
            Err(e) => return Err(e),
        };
        let mut got = 0u64;
        loop {
            match body.try_next().await {
                Ok(Some(chunk)) => {
                    got += chunk.len() as u64;
                    hasher.update(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(StoreError::Failed {
                        code: "ReadFailed".into(),
                        message: e.to_string(),
                        reachable: true,
                    })
                }
            }
        }
        if got != found.len {
            return Ok(Indexed::Changed);
        }
    }
    let digest: [u8; 32] = hasher.finalize().into();
    let copied = super::upload::copy(
        shared,
        &found.key,
        &found.key,
        found.len,
        &hex::encode(digest),
        found.content_type,
        Some(&found.store_etag),
    )
    .await;
    match copied {
        Ok(()) => Ok(Indexed::Recorded(digest)),
        Err(StoreError::Replaced) => Ok(Indexed::Changed),
        Err(e) => Err(e),
    }
}
