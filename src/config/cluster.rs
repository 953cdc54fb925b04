//! `[cluster]`: how this relay names itself to its peers and in audit records.

use crate::tomlfile::{FileError, Place};
use serde::Deserialize;
use toml::Spanned;

/// `[cluster]` as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) host_name: Option<Spanned<String>>,
}

/// `[cluster] host_name`: how this relay names itself in audit records and to its peers.
pub(super) fn host_name(c: &RawCluster, p: Place) -> Result<Option<String>, FileError> {
    let Some(name) = c.host_name.as_ref() else {
        return Ok(None);
    };
    let text = name.get_ref();
    if text.is_empty()
        || text.len() > 253
        || !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(p.invalid(
            name.span(),
            "cluster.host_name",
            format!("`{text}` is not a host name"),
        ));
    }
    Ok(Some(text.clone()))
}
