//! A bound on how long one attempt may take until its reply begins
//! (connecting and sending the request included). The SDK's HTTP client
//! waits up to 20 s to connect and 60 s per read and takes no settings for
//! either, so a service that accepts connections and never answers held
//! each attempt for a minute. Wrapped around the SDK's client, the bound
//! makes such an attempt a transport error, which the retry policy
//! retries and then reports.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::ErrorKind;
use azure_core::http::{AsyncRawResponse, HttpClient, Request};

#[derive(Debug)]
pub(super) struct Deadline {
    pub(super) inner: Arc<dyn HttpClient>,
    pub(super) limit: Duration,
}

#[async_trait]
impl HttpClient for Deadline {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        match tokio::time::timeout(self.limit, self.inner.execute_request(request)).await {
            Ok(result) => result,
            Err(_) => Err(azure_core::Error::with_message(
                ErrorKind::Io,
                format!(
                    "timed out: no reply within {:.1} s (storage option read_timeout)",
                    self.limit.as_secs_f64()
                ),
            )),
        }
    }
}
