//! Uploads into the bucket that never show a partial object, carrying the SHA-256 of the bytes.
//!
//! The digest is only known at the end, and S3 metadata is fixed when an object is created, so:
//! - an upload that fits in one part is buffered (at most `part_size`) and written with one
//!   `PutObject` carrying `x-amz-meta-sha256`;
//! - a larger one is a multipart upload to a staging key under a dot-folder (never servable),
//!   then copied server-side onto its key with the digest in its metadata (`CopyObject`, or
//!   `UploadPartCopy` parts above 5 GiB), then the staging object is deleted.
//!
//! Until the final write, the old object stays as it was. A failed or abandoned upload aborts
//! its multipart upload (also when the request is dropped mid-body); one a crash interrupted
//! is left to the bucket's lifecycle rule (`AbortIncompleteMultipartUpload`, README).

use std::sync::Arc;
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::client::{classify, StoreError};
use super::object::{self, S3Object};
use super::{S3Store, Shared};

/// S3's largest single `CopyObject`.
const COPY_MAX: u64 = 5 << 30;

/// An upload in progress. Feed it with [`Upload::write`], end it with [`Upload::finish`];
/// dropped before that, it aborts.
pub struct Upload<'a> {
    store: &'a S3Store,
    asset: String,
    key: String,
    hasher: Sha256,
    buffer: BytesMut,
    size: u64,
    multipart: Option<Multipart>,
}

struct Multipart {
    staging: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
}

impl S3Store {
    /// Starts an upload of `asset` (nothing is sent before the first full part).
    pub fn upload(&self, asset: &str) -> Upload<'_> {
        Upload {
            store: self,
            asset: asset.to_owned(),
            key: self.key(asset),
            hasher: Sha256::new(),
            buffer: BytesMut::new(),
            size: 0,
            multipart: None,
        }
    }
}

impl Upload<'_> {
    /// Bytes uploaded so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        let part = self.store.part_size;
        while !data.is_empty() {
            let take = (part - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == part {
                let bytes = std::mem::take(&mut self.buffer).freeze();
                self.send_part(bytes).await?;
            }
        }
        Ok(())
    }

    async fn send_part(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.store.shared);
        if self.multipart.is_none() {
            let staging = format!(
                "{}{}{:016x}",
                self.store.prefix(),
                object::STAGING,
                rand::random::<u64>()
            );
            let key = staging.clone();
            let s = Arc::clone(&shared);
            let upload_id = self
                .store
                .run(async move {
                    let started = Instant::now();
                    let got = s
                        .client
                        .create_multipart_upload()
                        .bucket(&s.bucket)
                        .key(&key)
                        .send()
                        .await
                        .map_err(|e| classify(&e));
                    let got = s.note("create_multipart", started, got)?;
                    got.upload_id()
                        .map(str::to_owned)
                        .ok_or(StoreError::Failed {
                            code: "NoUploadId".into(),
                            message: "the store returned no upload id".into(),
                            reachable: true,
                        })
                })
                .await?;
            self.multipart = Some(Multipart {
                staging,
                upload_id,
                parts: Vec::new(),
            });
        }
        let mp = self.multipart.as_mut().expect("set above");
        let number = mp.parts.len() as i32 + 1;
        let (key, id) = (mp.staging.clone(), mp.upload_id.clone());
        let etag = self
            .store
            .run(async move {
                let started = Instant::now();
                let got = shared
                    .client
                    .upload_part()
                    .bucket(&shared.bucket)
                    .key(&key)
                    .upload_id(&id)
                    .part_number(number)
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                    .map_err(|e| classify(&e));
                let got = shared.note("upload_part", started, got)?;
                Ok(got.e_tag().unwrap_or_default().to_owned())
            })
            .await?;
        mp.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .e_tag(etag)
                .build(),
        );
        Ok(())
    }

    /// Makes the upload the object at its key, atomically, with its digest. Returns what a
    /// lookup now sees.
    pub async fn finish(mut self) -> Result<S3Object, StoreError> {
        let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        let hex_digest = hex::encode(digest);
        let content_type = crate::http::content_type::content_type_for(&self.asset);
        let shared = Arc::clone(&self.store.shared);
        let key = self.key.clone();
        let Some(mp) = self.multipart.take() else {
            let bytes = std::mem::take(&mut self.buffer).freeze();
            return self
                .store
                .run(async move {
                    let started = Instant::now();
                    let put = shared
                        .client
                        .put_object()
                        .bucket(&shared.bucket)
                        .key(&key)
                        .content_type(content_type)
                        .metadata(object::DIGEST_FIELD, hex_digest)
                        .body(ByteStream::from(bytes))
                        .send()
                        .await
                        .map_err(|e| classify(&e));
                    shared.note("put", started, put)?;
                    shared.head(&key).await
                })
                .await;
        };
        let last = std::mem::take(&mut self.buffer).freeze();
        // Once handed over, the multipart upload is cleaned up by `commit` itself.
        let mut mp = Some(mp);
        if !last.is_empty() {
            self.multipart = mp.take();
            self.send_part(last).await?;
            mp = self.multipart.take();
        }
        let mp = mp.expect("kept above");
        let size = self.size;
        self.store
            .run(commit(shared, mp, key, size, hex_digest, content_type))
            .await
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if let Some(mp) = self.multipart.take() {
            let shared = Arc::clone(&self.store.shared);
            self.store.handle().spawn(async move {
                abort(&shared, &mp).await;
            });
        }
    }
}

async fn abort(shared: &Shared, mp: &Multipart) {
    let started = Instant::now();
    let done = shared
        .client
        .abort_multipart_upload()
        .bucket(&shared.bucket)
        .key(&mp.staging)
        .upload_id(&mp.upload_id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| classify(&e));
    if let Err(e) = shared.note("abort_multipart", started, done) {
        tracing::warn!(key = mp.staging.as_str(), error = %e, "cannot abort a failed upload (the bucket's lifecycle rule removes it)");
    }
}

/// Completes the staged upload, copies it onto `key` with the digest, removes the staging
/// object. On failure nothing at `key` has changed, and the staging object is removed.
async fn commit(
    shared: Arc<Shared>,
    mp: Multipart,
    key: String,
    size: u64,
    hex_digest: String,
    content_type: &'static str,
) -> Result<S3Object, StoreError> {
    let started = Instant::now();
    let parts = CompletedMultipartUpload::builder()
        .set_parts(Some(mp.parts.clone()))
        .build();
    let done = shared
        .client
        .complete_multipart_upload()
        .bucket(&shared.bucket)
        .key(&mp.staging)
        .upload_id(&mp.upload_id)
        .multipart_upload(parts)
        .send()
        .await
        .map_err(|e| classify(&e));
    if let Err(e) = shared.note("complete_multipart", started, done) {
        abort(&shared, &mp).await;
        return Err(e);
    }
    let copied = copy(
        &shared,
        &mp.staging,
        &key,
        size,
        &hex_digest,
        content_type,
        None,
    )
    .await;
    let started = Instant::now();
    let removed = shared
        .client
        .delete_object()
        .bucket(&shared.bucket)
        .key(&mp.staging)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| classify(&e));
    if let Err(e) = shared.note("delete", started, removed) {
        tracing::warn!(key = mp.staging.as_str(), error = %e, "cannot remove a staged upload (the bucket's lifecycle rule removes it)");
    }
    copied?;
    shared.head(&key).await
}

/// Server-side copy of `from` onto `to` with new metadata: one `CopyObject` up to 5 GiB, else
/// a multipart upload of `UploadPartCopy` ranges (S3's rule for large copies). With
/// `if_match`, only while the source still has that store ETag (`Replaced` otherwise).
pub(super) async fn copy(
    shared: &Shared,
    from: &str,
    to: &str,
    size: u64,
    hex_digest: &str,
    content_type: &'static str,
    if_match: Option<&str>,
) -> Result<(), StoreError> {
    let source = object::copy_source(&shared.bucket, from);
    if size <= COPY_MAX {
        let started = Instant::now();
        let done = shared
            .client
            .copy_object()
            .bucket(&shared.bucket)
            .key(to)
            .copy_source(&source)
            .set_copy_source_if_match(if_match.map(str::to_owned))
            .metadata_directive(MetadataDirective::Replace)
            .metadata(object::DIGEST_FIELD, hex_digest)
            .content_type(content_type)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&e));
        return shared.note("copy", started, done);
    }
    let started = Instant::now();
    let created = shared
        .client
        .create_multipart_upload()
        .bucket(&shared.bucket)
        .key(to)
        .metadata(object::DIGEST_FIELD, hex_digest)
        .content_type(content_type)
        .send()
        .await
        .map_err(|e| classify(&e));
    let created = shared.note("create_multipart", started, created)?;
    let mp = Multipart {
        staging: to.to_owned(),
        upload_id: created.upload_id().unwrap_or_default().to_owned(),
        parts: Vec::new(),
    };
    let result = async {
        let mut parts = Vec::new();
        let mut start = 0u64;
        let mut number = 1;
        while start < size {
            let end = (start + COPY_MAX).min(size);
            let started = Instant::now();
            let got = shared
                .client
                .upload_part_copy()
                .bucket(&shared.bucket)
                .key(to)
                .upload_id(&mp.upload_id)
                .part_number(number)
                .copy_source(&source)
                .set_copy_source_if_match(if_match.map(str::to_owned))
                .copy_source_range(object::range_header(start, end))
                .send()
                .await
                .map_err(|e| classify(&e));
            let got = shared.note("upload_part_copy", started, got)?;
            let etag = got
                .copy_part_result()
                .and_then(|r| r.e_tag())
                .unwrap_or_default()
                .to_owned();
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .e_tag(etag)
                    .build(),
            );
            number += 1;
            start = end;
        }
        let started = Instant::now();
        let done = shared
            .client
            .complete_multipart_upload()
            .bucket(&shared.bucket)
            .key(to)
            .upload_id(&mp.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify(&e));
        shared.note("complete_multipart", started, done)
    }
    .await;
    if result.is_err() {
        abort(shared, &mp).await;
    }
    result
}
