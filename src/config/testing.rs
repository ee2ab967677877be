//! A minimal valid configuration and helpers for the configuration's unit tests.

use std::path::Path;

use super::{Config, ConfigError, Env};

pub(crate) struct MapEnv(pub(crate) Vec<(&'static str, &'static str)>);
impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

pub(crate) fn base() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    format!(
        r#"
profile = "development"
[tls]
ca = "{root}/certs-example/ca.crt"
cert = "{root}/certs-example/server.crt"
key = "{root}/certs-example/server.key"

[schemas]
dir = "{root}/schemas"

[sla]
calendar = "{root}/config/bank-holidays-england-and-wales.toml"

[audit]
signing_key = "{root}/certs-example/gateway-signing.key"
person_key_secret_file = "{root}/certs-example/person-key.secret"

[storage]
payload_key_file = "{root}/certs-example/payload.key"

[[agencies]]
id = "liaison"
name = "Liaison"
service_type = "liaison"
area = "coventry"
role = "sender"
certificate = {{ san_uri = "urn:x:liaison" }}

[[agencies]]
id = "cmht"
name = "CMHT"
service_type = "cmht"
area = "coventry"
role = "receiver"
certificate = {{ sha256 = "{pin}" }}

[[permissions]]
sender = "liaison"
service_types = ["cmht"]
areas = ["coventry"]
"#,
        pin = "AB:".repeat(31) + "AB"
    )
}

pub(crate) fn load(text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("test.toml"), env)
}
