//! CloudFront invalidations through the real aws-sdk-cloudfront client.
//!
//! The client is built on first use (no AWS call, and no credential lookup, at startup).
//! Credentials come from the standard aws-config chain (env, profile, IMDS) unless static keys
//! are configured; `endpoint_url` points it at an emulator or a private endpoint. Transient
//! failures (throttling, 5xx, connection errors) are retried by the SDK's standard retry mode
//! with exponential backoff; every attempt of one request reuses one CallerReference, so a retry
//! that reaches AWS twice creates one invalidation.

use std::time::Duration;

use aws_sdk_cloudfront::error::ProvideErrorMetadata;
use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};
use aws_sdk_cloudfront::Client;
use serde::Serialize;

use crate::config::InvalidationSettings;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InvalidationInfo {
    pub id: String,
    /// As CloudFront says it (`InProgress`, `Completed`; moto says `COMPLETED`).
    pub status: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    pub create_time: String,
}

/// A failed AWS call: the error code AWS (or the SDK) gave, and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub code: String,
    pub message: String,
}

fn aws_error<E: ProvideErrorMetadata + std::fmt::Debug>(
    e: &aws_sdk_cloudfront::error::SdkError<E>,
) -> AwsError {
    use aws_sdk_cloudfront::error::SdkError;
    let (code, message) = match e {
        SdkError::ServiceError(se) => (
            se.err().code().unwrap_or("Unknown").to_string(),
            se.err().message().unwrap_or("").to_string(),
        ),
        SdkError::DispatchFailure(_) => (
            "DispatchFailure".into(),
            "could not reach the CloudFront endpoint".into(),
        ),
        SdkError::TimeoutError(_) => ("Timeout".into(), "CloudFront did not answer in time".into()),
        SdkError::ResponseError(_) => (
            "ResponseError".into(),
            "unreadable response from CloudFront".into(),
        ),
        SdkError::ConstructionFailure(_) => (
            "ConstructionFailure".into(),
            "request could not be built".into(),
        ),
        _ => ("Unknown".into(), "unknown SDK error".into()),
    };
    AwsError { code, message }
}

fn time(t: &aws_sdk_cloudfront::primitives::DateTime) -> String {
    t.fmt(aws_sdk_cloudfront::primitives::DateTimeFormat::DateTime)
        .unwrap_or_default()
}

pub struct CloudFront {
    client: Client,
    distribution_id: String,
}

impl CloudFront {
    pub async fn connect(s: &InvalidationSettings) -> CloudFront {
        use aws_config::retry::RetryConfig;
        use aws_config::timeout::TimeoutConfig;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(s.region.clone()))
            .retry_config(RetryConfig::standard().with_max_attempts(s.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .operation_timeout(Duration::from_secs(30))
                    .build(),
            );
        if !s.endpoint_url.is_empty() {
            loader = loader.endpoint_url(&s.endpoint_url);
        }
        if !s.access_key_id.expose().is_empty() {
            loader = loader.credentials_provider(aws_sdk_cloudfront::config::Credentials::new(
                s.access_key_id.expose(),
                s.secret_access_key.expose(),
                None,
                None,
                "video-origin-config",
            ));
        }
        let sdk = loader.load().await;
        CloudFront {
            client: Client::new(&sdk),
            distribution_id: s.distribution_id.clone(),
        }
    }

    pub async fn create(
        &self,
        paths: &[String],
        caller_reference: &str,
    ) -> Result<InvalidationInfo, AwsError> {
        let mut p = Paths::builder().quantity(paths.len() as i32);
        for path in paths {
            p = p.items(path);
        }
        let batch = InvalidationBatch::builder()
            .paths(p.build().map_err(|e| AwsError {
                code: "ConstructionFailure".into(),
                message: e.to_string(),
            })?)
            .caller_reference(caller_reference)
            .build()
            .map_err(|e| AwsError {
                code: "ConstructionFailure".into(),
                message: e.to_string(),
            })?;
        let out = self
            .client
            .create_invalidation()
            .distribution_id(&self.distribution_id)
            .invalidation_batch(batch)
            .send()
            .await
            .map_err(|e| aws_error(&e))?;
        one(out.invalidation())
    }

    pub async fn get(&self, id: &str) -> Result<InvalidationInfo, AwsError> {
        let out = self
            .client
            .get_invalidation()
            .distribution_id(&self.distribution_id)
            .id(id)
            .send()
            .await
            .map_err(|e| aws_error(&e))?;
        one(out.invalidation())
    }

    /// Recent invalidations (CloudFront's first page, up to `max`).
    pub async fn list(&self, max: i32) -> Result<Vec<InvalidationInfo>, AwsError> {
        let out = self
            .client
            .list_invalidations()
            .distribution_id(&self.distribution_id)
            .max_items(max)
            .send()
            .await
            .map_err(|e| aws_error(&e))?;
        Ok(out
            .invalidation_list()
            .map(|l| {
                l.items()
                    .iter()
                    .map(|s| InvalidationInfo {
                        id: s.id().to_string(),
                        status: s.status().to_string(),
                        paths: vec![],
                        create_time: time(s.create_time()),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// The invalidation a create/get answer carries (CloudFront always sends one on success).
fn one(
    inv: Option<&aws_sdk_cloudfront::types::Invalidation>,
) -> Result<InvalidationInfo, AwsError> {
    inv.map(info).ok_or_else(|| AwsError {
        code: "EmptyResponse".into(),
        message: "no invalidation in response".into(),
    })
}

fn info(inv: &aws_sdk_cloudfront::types::Invalidation) -> InvalidationInfo {
    InvalidationInfo {
        id: inv.id().to_string(),
        status: inv.status().to_string(),
        paths: inv
            .invalidation_batch()
            .and_then(|b| b.paths())
            .map(|p| p.items().to_vec())
            .unwrap_or_default(),
        create_time: time(inv.create_time()),
    }
}
