//! `[metrics]`: where the metrics and health endpoint listens.

use crate::tomlfile::{FileError, Place};
use serde::Deserialize;
use std::net::SocketAddr;
use toml::Spanned;

/// `[metrics]` as written (serde; unknown keys are errors).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Spanned<String>>,
}

/// `[metrics]`: where the endpoint listens.
pub(super) fn metrics(m: &RawMetrics, p: Place) -> Result<SocketAddr, FileError> {
    match &m.listen {
        None => Ok(SocketAddr::from(([127, 0, 0, 1], 9891))),
        Some(l) => l.get_ref().parse().map_err(|_| {
            p.invalid(
                l.span(),
                "metrics.listen",
                format!("`{}` is not an address such as 127.0.0.1:9891", l.get_ref()),
            )
        }),
    }
}
