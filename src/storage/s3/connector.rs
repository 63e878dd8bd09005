//! The S3 client's HTTP connector: hyper's client with a small read buffer.
//!
//! A body chunk hyper hands over is a slice of its read buffer, and that buffer grows (up to
//! ~400 KiB) while reads fill it, which on a fast store they always do. A few such chunks wait
//! in the hand-over from the store to a stalled viewer, so with the SDK's default connector a
//! stalled viewer pinned about 1.5 MiB (measured: 2,000 slow viewers, 2.9 GiB). With the read
//! buffer capped, the chunks are small and what a stalled stream holds is bounded by a few of
//! them; the rest waits in the kernel's socket buffers. Everything else (signing, retries,
//! timeouts per attempt) is still the SDK's: this is only the transport.

use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// hyper's smallest allowed read buffer limit (it needs room for a response head).
pub const READ_BUFFER: usize = 16 * 1024;

type Inner = Client<hyper_rustls::HttpsConnector<TcpConnector>, SdkBody>;

#[derive(Clone, Debug)]
pub struct SmallBufferClient {
    client: Inner,
}

impl SmallBufferClient {
    /// HTTPS (the platform's roots, rustls with aws-lc-rs) or plain HTTP for an `http://`
    /// endpoint (emulators, a store on a private network).
    pub fn shared(connect_timeout: Duration) -> std::io::Result<SharedHttpClient> {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http1_max_buf_size(READ_BUFFER)
            .build(https);
        Ok(SharedHttpClient::new(SmallBufferClient { client }))
    }
}

impl HttpConnector for SmallBufferClient {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::user(e.into()))?;
            // Transport failures (refused, reset, a connection closed mid-head) are I/O
            // errors to the SDK, so its retry policy treats them as transient.
            let response = client
                .request(request)
                .await
                .map_err(|e| ConnectorError::io(e.into()))?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

impl HttpClient for SmallBufferClient {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}
