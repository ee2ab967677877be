//! `[amqp]`: the broker and the namespace of every exchange and queue.

use serde::Deserialize;

use super::{DEFAULT_AMQP_URL, Env, Problems, setting};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAmqp {
    url: Option<String>,
    /// A file holding the URL (with its password): e.g. `credential:amqp-url`.
    url_file: Option<std::path::PathBuf>,
    namespace: Option<String>,
}

/// `Debug` leaves out the URL's password ([`super::url_for_debug`]).
#[derive(Clone)]
pub struct AmqpConfig {
    pub url: String,
    /// Prefix for every exchange and queue name (`<namespace>.referrals`, ...); empty
    /// for none. Lets several deployments or test runs share one broker.
    pub namespace: String,
}

impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &super::url_for_debug(&self.url))
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// The broker URL; the namespace is checked later (after the TLS files), see `build_amqp`.
pub(super) fn build_amqp_url(raw: &RawAmqp, env: &dyn Env, problems: &mut Problems) -> String {
    let file_url = super::url_from_file(
        raw.url.as_deref(),
        raw.url_file.as_deref(),
        "amqp",
        env.var("REFGW_AMQP_URL").is_some(),
        problems,
    );
    let (amqp_url, amqp_key) = setting(
        env,
        "REFGW_AMQP_URL",
        "amqp.url",
        file_url.or_else(|| raw.url.clone()),
        DEFAULT_AMQP_URL,
    );
    if !(amqp_url.starts_with("amqp://") || amqp_url.starts_with("amqps://")) {
        problems.push(&amqp_key, "must start with amqp:// or amqps://");
    }
    amqp_url
}

pub(super) fn build_amqp(
    raw: RawAmqp,
    url: String,
    env: &dyn Env,
    problems: &mut Problems,
) -> AmqpConfig {
    let namespace = env
        .var("REFGW_AMQP_NAMESPACE")
        .or(raw.namespace)
        .unwrap_or_default();
    if !namespace.is_empty()
        && (namespace.len() > 100
            || !namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        problems.push(
            "amqp.namespace",
            "must be at most 100 letters, digits, '-' or '_'",
        );
    }
    AmqpConfig { url, namespace }
}
