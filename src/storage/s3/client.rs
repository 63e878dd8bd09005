//! The one aws-sdk-s3 client of the process, on a small runtime of its own, and what its
//! errors mean to us.
//!
//! Every store call runs on the store's runtime: its connection pool then lives exactly as
//! long as the store, whichever worker runtime (or plain thread, like the readiness watch)
//! asks. Retries (throttling such as `SlowDown`, 5xx, timeouts, connection errors) are the
//! SDK's standard mode with exponential backoff, `max_attempts` per call; each attempt has
//! `attempt_timeout_ms` to produce a response head.

use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::config::S3Settings;

/// A store call that failed, as the caller must treat it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No such object (404): the client gets 404.
    NotFound,
    /// The pinned version is gone (412 on `If-Match`): replaced since the lookup.
    Replaced,
    /// Anything else, with the store's error code (or the SDK's kind) and message. `reachable`
    /// is false when the store could not be reached or did not answer in time.
    Failed {
        code: String,
        message: String,
        reachable: bool,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotFound => f.write_str("NotFound"),
            StoreError::Replaced => f.write_str("PreconditionFailed (object replaced)"),
            StoreError::Failed { code, message, .. } if message.is_empty() => f.write_str(code),
            StoreError::Failed { code, message, .. } => write!(f, "{code}: {message}"),
        }
    }
}

impl StoreError {
    /// The label used in metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            StoreError::NotFound => "not_found",
            StoreError::Replaced => "replaced",
            StoreError::Failed {
                reachable: false, ..
            } => "unreachable",
            StoreError::Failed { .. } => "error",
        }
    }
}

/// What an SDK error means. A bucket that does not exist is a fault of ours, not a 404.
pub fn classify<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> StoreError {
    match e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("");
            let message = se.err().message().unwrap_or("").to_string();
            let status = Some(se.raw().status().as_u16());
            match (status, code) {
                (_, "NoSuchBucket") => StoreError::Failed {
                    code: code.into(),
                    message,
                    reachable: true,
                },
                (Some(404), _) | (_, "NoSuchKey") | (_, "NotFound") => StoreError::NotFound,
                (Some(412), _) | (_, "PreconditionFailed") => StoreError::Replaced,
                (status, code) => StoreError::Failed {
                    code: if code.is_empty() {
                        status.map_or("Unknown".into(), |s| format!("HTTP {s}"))
                    } else {
                        code.into()
                    },
                    message,
                    reachable: true,
                },
            }
        }
        SdkError::DispatchFailure(_) => StoreError::Failed {
            code: "DispatchFailure".into(),
            message: "could not reach the store".into(),
            reachable: false,
        },
        SdkError::TimeoutError(_) => StoreError::Failed {
            code: "Timeout".into(),
            message: "the store did not answer in time".into(),
            reachable: false,
        },
        SdkError::ResponseError(_) => StoreError::Failed {
            code: "ResponseError".into(),
            message: "unreadable response from the store".into(),
            reachable: false,
        },
        SdkError::ConstructionFailure(_) => StoreError::Failed {
            code: "ConstructionFailure".into(),
            message: "request could not be built".into(),
            reachable: true,
        },
        _ => StoreError::Failed {
            code: "Unknown".into(),
            message: "unknown SDK error".into(),
            reachable: true,
        },
    }
}

/// Builds the client (no network: credentials from the chain are looked up on first use).
pub async fn build(s: &S3Settings) -> std::io::Result<aws_sdk_s3::Client> {
    let http =
        super::connector::SmallBufferClient::shared(Duration::from_millis(s.connect_timeout_ms))?;
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(s.region.clone()))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(s.max_attempts)
                .with_initial_backoff(Duration::from_millis(100)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(s.connect_timeout_ms))
                .operation_attempt_timeout(Duration::from_millis(s.attempt_timeout_ms))
                .build(),
        );
    if !s.endpoint_url.is_empty() {
        loader = loader.endpoint_url(&s.endpoint_url);
    }
    if !s.access_key_id.expose().is_empty() {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            s.access_key_id.expose(),
            s.secret_access_key.expose(),
            None,
            None,
            "video-origin-config",
        ));
    }
    let shared = loader.load().await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(s.force_path_style)
        .http_client(http)
        .build();
    Ok(aws_sdk_s3::Client::from_conf(config))
}
