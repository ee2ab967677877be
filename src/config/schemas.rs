//! `[schemas]`: the directory of JSON Schemas.

use std::path::PathBuf;

use serde::Deserialize;

use super::Problems;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchemas {
    dir: Option<PathBuf>,
}

pub(super) fn build_schemas_dir(raw: RawSchemas, problems: &mut Problems) -> PathBuf {
    let schemas_dir = raw.dir.unwrap_or_else(|| PathBuf::from("schemas"));
    if !schemas_dir.is_dir() {
        problems.push(
            "schemas.dir",
            format!("directory '{}' does not exist", schemas_dir.display()),
        );
    }
    schemas_dir
}
