//! Fetches the identity provider's signing keys (`staff.jwks_url`) at start-up, every
//! `jwks_refresh_secs`, and early when a token names a key nobody knows (the provider
//! may have rotated), at most once every few seconds so a stream of made-up key ids
//! cannot hammer the provider.

use std::sync::Arc;
use std::time::Duration;

use crate::config::JwksUrl;
use crate::staff_auth::tokens::StaffAuth;

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// The shortest gap between two fetches, and the wait after a failed one.
const MIN_GAP: Duration = Duration::from_secs(5);
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read staff.jwks_ca {path}: {message}")]
    Ca { path: String, message: String },
    #[error("cannot build the HTTPS client: {0}")]
    Client(String),
    #[error("fetching {url}: {message}")]
    Fetch { url: String, message: String },
}

pub struct JwksRefresher {
    auth: Arc<StaffAuth>,
    source: JwksUrl,
    client: reqwest::Client,
}

fn client(source: &JwksUrl) -> Result<reqwest::Client, JwksError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = &source.ca {
        let certs =
            crate::security::tls::load_certs("staff.jwks_ca", ca).map_err(|e| JwksError::Ca {
                path: ca.display().to_string(),
                message: e.to_string(),
            })?;
        for cert in certs {
            roots.add(cert).map_err(|e| JwksError::Ca {
                path: ca.display().to_string(),
                message: e.to_string(),
            })?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::security::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| JwksError::Client(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| JwksError::Client(e.to_string()))
}

impl JwksRefresher {
    pub fn new(auth: Arc<StaffAuth>, source: JwksUrl) -> Result<Self, JwksError> {
        let client = client(&source)?;
        Ok(Self {
            auth,
            source,
            client,
        })
    }

    /// Fetches the document once and, if it holds usable keys, trusts them (replacing
    /// the previous fetch). Returns the key ids.
    pub async fn fetch_once(&self) -> Result<(Vec<String>, Vec<String>), JwksError> {
        let failed = |message: String| JwksError::Fetch {
            url: self.source.url.clone(),
            message,
        };
        let mut response = self
            .client
            .get(&self.source.url)
            .header("accept", "application/json, application/jwk-set+json")
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("HTTP {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(failed("the document is larger than 1 MiB".into()));
        }
        // Read in chunks, stopping as soon as the document is too large.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(failed("the document is larger than 1 MiB".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let text = std::str::from_utf8(&body).map_err(|_| failed("not UTF-8".into()))?;
        self.auth.replace_fetched_keys(text).map_err(failed)
    }

    async fn fetch_and_log(&self) -> bool {
        match self.fetch_once().await {
            Ok((kids, skipped)) => {
                tracing::info!(url = %self.source.url, ?kids, "staff token keys fetched");
                for note in skipped {
                    tracing::warn!(url = %self.source.url, %note, "a key in the provider's JWKS is not used");
                }
                true
            }
            Err(e) => {
                // The keys fetched before stay trusted until a fetch succeeds.
                tracing::error!(error = %e, "cannot refresh staff token keys");
                false
            }
        }
    }

    /// Fetches now, then on the schedule, until it is asked to stop (or the stop signal's
    /// sender is gone).
    pub async fn run(self, stop: impl Into<crate::worker::StopSignal>) {
        let mut stop = stop.into();
        let mut ok = self.fetch_and_log().await;
        loop {
            let wait = if ok {
                self.source.refresh
            } else {
                RETRY_AFTER_FAILURE
            };
            tokio::select! {
                () = stop.stopped() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.auth.unknown_key_seen.notified() => {
                    tokio::select! {
                        () = stop.stopped() => return,
                        _ = tokio::time::sleep(MIN_GAP) => {}
                    }
                }
            }
            if stop.is_stopped() {
                return;
            }
            ok = self.fetch_and_log().await;
        }
    }
}
