//! `credential:NAME` paths: a secret file that systemd passed to the service with
//! `LoadCredential=NAME:/path` (or `LoadCredentialEncrypted=`), read from
//! `$CREDENTIALS_DIRECTORY/NAME`. Any string value of the configuration that is exactly
//! `credential:NAME` is replaced by that path before the file is checked; without
//! `$CREDENTIALS_DIRECTORY` (not started by systemd with credentials) each such value is a
//! problem and the gateway does not start.

use super::{Env, Problems};

pub(super) const PREFIX: &str = "credential:";

/// Replaces every `credential:NAME` string in `value` (keys as dotted paths in problems).
pub(super) fn resolve(value: &mut toml::Value, env: &dyn Env, problems: &mut Problems) {
    let dir = env.var("CREDENTIALS_DIRECTORY");
    walk(value, "", dir.as_deref(), problems);
}

fn walk(value: &mut toml::Value, key: &str, dir: Option<&str>, problems: &mut Problems) {
    match value {
        toml::Value::Table(table) => {
            for (name, inner) in table.iter_mut() {
                let key = if key.is_empty() {
                    name.clone()
                } else {
                    format!("{key}.{name}")
                };
                walk(inner, &key, dir, problems);
            }
        }
        toml::Value::Array(items) => {
            for (i, inner) in items.iter_mut().enumerate() {
                walk(inner, &format!("{key}[{i}]"), dir, problems);
            }
        }
        toml::Value::String(text) => {
            if let Some(name) = text.strip_prefix(PREFIX) {
                match path_of(name, dir) {
                    Ok(path) => *text = path,
                    Err(message) => problems.push(key, message),
                }
            }
        }
        _ => {}
    }
}

fn path_of(name: &str, dir: Option<&str>) -> Result<String, String> {
    let valid = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    if !valid {
        return Err(format!(
            "'{PREFIX}{name}': a credential name is letters, digits, '.', '-', '_' or '@' (a file name, no '/')"
        ));
    }
    match dir {
        Some(dir) if dir.starts_with('/') => Ok(format!("{}/{name}", dir.trim_end_matches('/'))),
        Some(dir) => Err(format!(
            "'{PREFIX}{name}': $CREDENTIALS_DIRECTORY '{dir}' is not an absolute path"
        )),
        None => Err(format!(
            "'{PREFIX}{name}' needs $CREDENTIALS_DIRECTORY, which systemd sets for a unit with LoadCredential= (docs/deployment.md)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::NoEnv;
    use super::super::testing::{MapEnv, base, load};

    /// The shipped test config with its payload key and signing key read as credentials.
    fn with_credentials() -> String {
        let root = env!("CARGO_MANIFEST_DIR");
        base()
            .replace(
                &format!("\"{root}/certs-example/payload.key\""),
                "\"credential:payload.key\"",
            )
            .replace(
                &format!("\"{root}/certs-example/gateway-signing.key\""),
                "\"credential:gateway-signing.key\"",
            )
    }

    #[test]
    fn credential_paths_read_from_the_credentials_directory() {
        let text = with_credentials();
        assert!(text.contains("credential:payload.key"));
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/certs-example");
        let config = load(&text, &MapEnv(vec![("CREDENTIALS_DIRECTORY", dir)])).unwrap();
        let expected = std::fs::read_to_string(format!("{dir}/payload.key")).unwrap();
        assert_eq!(config.storage.payload_key, expected.trim());
        assert_eq!(
            config.audit.signing_key,
            std::path::Path::new(dir).join("gateway-signing.key")
        );
    }

    #[test]
    fn credential_paths_fail_closed() {
        let text = with_credentials();
        let err = load(&text, &NoEnv).unwrap_err().to_string();
        assert!(
            err.contains(
                "storage.payload_key_file: 'credential:payload.key' needs $CREDENTIALS_DIRECTORY"
            ),
            "{err}"
        );
        assert!(
            err.contains("audit.signing_key: 'credential:gateway-signing.key' needs"),
            "{err}"
        );
        // Each once: not again as a file that cannot be read (whose fix would differ).
        assert_eq!(err.matches("credential:").count(), 2, "{err}");
        // A mistyped key in a file with credentials is still shown with its line.
        let typo = text.replace("[storage]\n", "[storage]\nretention_day = 1\n");
        assert_ne!(typo, text);
        let err = load(&typo, &NoEnv).unwrap_err().to_string();
        assert!(
            err.contains("retention_day") && err.contains("line 19"),
            "{err}"
        );

        let err = load(&text, &MapEnv(vec![("CREDENTIALS_DIRECTORY", "relative")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not an absolute path"), "{err}");

        let escaping = text.replace("credential:payload.key", "credential:../payload.key");
        let err = load(
            &escaping,
            &MapEnv(vec![("CREDENTIALS_DIRECTORY", "/run/x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("a credential name is"), "{err}");

        // A credential that systemd did not pass: the file check names it.
        let err = load(
            &text,
            &MapEnv(vec![("CREDENTIALS_DIRECTORY", "/nonexistent-credentials")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/nonexistent-credentials/payload.key"),
            "{err}"
        );
    }
}
