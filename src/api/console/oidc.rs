//! OpenID Connect sign-in (authorization code + PKCE, issuer discovery) with the
//! `openidconnect` crate over the project's own reqwest client (ring rustls config, no
//! redirects followed, bounded bodies). The ID token is checked by `openidconnect`
//! (signature against the provider's JWKS, issuer, audience = our client id, expiry,
//! nonce), with the algorithms `[staff] algorithms` allows; the roles and agency are then
//! read from its claims by the same code, and the same `TokenPolicy`, as staff API tokens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope,
};

use crate::config::console::OidcSettings;
use crate::staff_auth::tokens::{StaffAuth, StaffIdentity};

/// The largest response read from the provider.
const MAX_BODY: usize = 1024 * 1024;
/// How long discovered metadata (and the JWKS it carries) is reused.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// The least time between two discoveries caused by an ID token the cached keys did not
/// verify.
const METADATA_MIN_AGE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// `openidconnect`'s HTTP client: our reqwest client.
pub struct Http(reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<openidconnect::HttpResponse, HttpError>> + 'c>,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request)
                .map_err(|e| HttpError(format!("bad request: {e}")))?;
            let mut response = self
                .0
                .execute(request)
                .await
                .map_err(|e| HttpError(e.to_string()))?;
            let mut builder = http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| HttpError(e.to_string()))?
            {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(HttpError("the response is larger than 1 MiB".into()));
                }
                body.extend_from_slice(&chunk);
            }
            builder.body(body).map_err(|e| HttpError(e.to_string()))
        })
    }
}

fn http_client(settings: &OidcSettings) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(ca) = &settings.ca {
        for cert in crate::security::tls::load_certs("console.oidc_ca", ca)? {
            roots.add(cert)?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::security::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Why a sign-in failed; the text is shown to the user and logged (no token contents).
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("the identity provider cannot be reached or its discovery document is unusable")]
    Discovery,
    #[error("the identity provider refused the authorization code")]
    Exchange,
    #[error("the identity provider returned no ID token")]
    NoIdToken,
    #[error("the ID token was refused ({0})")]
    IdToken(String),
    #[error("the ID token's claims were refused ({0})")]
    Claims(String),
}

pub struct Oidc {
    settings: OidcSettings,
    http: Http,
    metadata: tokio::sync::Mutex<Option<(Arc<CoreProviderMetadata>, Instant)>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.settings.issuer_url)
            .finish()
    }
}

/// What the browser is sent to, and what the login cookie keeps.
pub struct Authorization {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

fn algorithm(alg: jsonwebtoken::Algorithm) -> Option<CoreJwsSigningAlgorithm> {
    use jsonwebtoken::Algorithm as A;
    Some(match alg {
        A::ES256 => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        A::ES384 => CoreJwsSigningAlgorithm::EcdsaP384Sha384,
        A::RS256 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        A::RS384 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
        A::RS512 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
        A::PS256 => CoreJwsSigningAlgorithm::RsaSsaPssSha256,
        A::EdDSA => CoreJwsSigningAlgorithm::EdDsa,
        _ => return None,
    })
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> anyhow::Result<Self> {
        let http = Http(http_client(&settings)?);
        Ok(Self {
            settings,
            http,
            metadata: tokio::sync::Mutex::new(None),
        })
    }

    pub fn provider_name(&self) -> &str {
        &self.settings.provider_name
    }

    async fn metadata(&self) -> Result<Arc<CoreProviderMetadata>, SignInError> {
        self.metadata_other_than(None).await
    }

    /// The provider's metadata, discovered again when the cached one is older than
    /// [`METADATA_TTL`], or is `stale` (whose keys did not verify an ID token: the
    /// provider rotated its keys) and older than [`METADATA_MIN_AGE`].
    async fn metadata_other_than(
        &self,
        stale: Option<&Arc<CoreProviderMetadata>>,
    ) -> Result<Arc<CoreProviderMetadata>, SignInError> {
        let mut cached = self.metadata.lock().await;
        if let Some((metadata, at)) = cached.as_ref()
            && at.elapsed() < METADATA_TTL
            && !stale.is_some_and(|s| Arc::ptr_eq(s, metadata) && at.elapsed() >= METADATA_MIN_AGE)
        {
            return Ok(metadata.clone());
        }
        let issuer = IssuerUrl::new(self.settings.issuer_url.clone()).map_err(|e| {
            tracing::error!(error = %e, "console.issuer_url is not a URL");
            SignInError::Discovery
        })?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, issuer = %self.settings.issuer_url, "OpenID Connect discovery failed");
                SignInError::Discovery
            })?;
        let metadata = Arc::new(metadata);
        *cached = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    fn client(
        &self,
        metadata: &CoreProviderMetadata,
    ) -> Result<
        openidconnect::core::CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        SignInError,
    > {
        let redirect = RedirectUrl::new(self.settings.redirect_url.clone()).map_err(|e| {
            tracing::error!(error = %e, "console.redirect_url is not a URL");
            SignInError::Discovery
        })?;
        Ok(CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            self.settings.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    /// The provider's authorization URL for a new sign-in.
    pub async fn authorize(&self) -> Result<Authorization, SignInError> {
        let metadata = self.metadata().await?;
        let client = self.client(&metadata)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &self.settings.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        Ok(Authorization {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges the code, checks the ID token and reads the staff identity from it.
    pub async fn finish(
        &self,
        code: &str,
        nonce: &str,
        pkce_verifier: &str,
        auth: &StaffAuth,
    ) -> Result<StaffIdentity, SignInError> {
        let metadata = self.metadata().await?;
        let client = self.client(&metadata)?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|_| SignInError::Discovery)?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "the identity provider refused a code exchange");
                SignInError::Exchange
            })?;
        use openidconnect::TokenResponse;
        let id_token = response.id_token().ok_or(SignInError::NoIdToken)?;
        let allowed: Vec<CoreJwsSigningAlgorithm> = auth
            .policy()
            .algorithms
            .iter()
            .filter_map(|a| algorithm(*a))
            .collect();
        let nonce = Nonce::new(nonce.to_owned());
        let verified = {
            let verifier = client.id_token_verifier().set_allowed_algs(allowed.clone());
            id_token.claims(&verifier, &nonce).map(|_| ())
        };
        match verified {
            Ok(()) => {}
            // Signed with a key the cached metadata does not hold (a rotation at the
            // provider): discover its keys again, once, and check again.
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) => {
                let fresh = self.metadata_other_than(Some(&metadata)).await?;
                let client = self.client(&fresh)?;
                let verifier = client.id_token_verifier().set_allowed_algs(allowed);
                id_token
                    .claims(&verifier, &nonce)
                    .map_err(|e| SignInError::IdToken(e.to_string()))?;
            }
            Err(e) => return Err(SignInError::IdToken(e.to_string())),
        }
        // Verified: now read the same claims staff API tokens are read by.
        let text = id_token.to_string();
        let payload = text
            .split('.')
            .nth(1)
            .ok_or_else(|| SignInError::IdToken("not a JWS".into()))?;
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| SignInError::IdToken("not base64url".into()))?;
        let claims: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| SignInError::IdToken("not JSON".into()))?;
        auth.identity_from_claims(&claims)
            .map_err(|e| SignInError::Claims(e.to_string()))
    }
}
