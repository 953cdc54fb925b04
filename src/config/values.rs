//! Values several tables share: numbers as written (with their place), fractions, positive
//! numbers and lists of domains.

use crate::policy::domains::normalise_domain;
use crate::tomlfile::{FileError, Place};
use toml::Spanned;

/// A numeric setting as written, with its place for errors.
pub(super) type Number = Option<Spanned<u64>>;

/// A fractional setting within `0..=max`.
pub(super) fn fraction(
    p: Place,
    value: &Option<Spanned<f64>>,
    key: &str,
    max: f64,
    default: f64,
) -> Result<f64, FileError> {
    match value {
        None => Ok(default),
        Some(v) if v.get_ref().is_finite() && (0.0..=max).contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err(p.invalid(
            v.span(),
            key,
            format!("{} is out of range: 0..={max}", v.get_ref()),
        )),
    }
}

/// A number above 0 up to `max` (0 would make every message fire).
pub(super) fn positive(
    p: Place,
    value: &Option<Spanned<f64>>,
    key: &str,
    max: f64,
    default: f64,
) -> Result<f64, FileError> {
    let v = fraction(p, value, key, max, default)?;
    match value {
        Some(spanned) if v <= 0.0 => Err(p.invalid(
            spanned.span(),
            key,
            format!("must be above 0 (0 would count every message as a signal): 0<..={max}"),
        )),
        _ => Ok(v),
    }
}

pub(super) fn domains(
    list: &[Spanned<String>],
    key: &str,
    p: Place,
) -> Result<Vec<String>, FileError> {
    list.iter()
        .map(|d| normalise_domain(d.get_ref()).map_err(|e| p.invalid(d.span(), key, e.to_string())))
        .collect()
}
