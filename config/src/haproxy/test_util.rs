//! Helpers for the reader's unit tests: read a config given as text, as
//! file `t.cfg`, with a fixed environment.

use super::{read_sources, validate_reading, Diag, Env};
use crate::file::ConfigFile;

pub fn env() -> Env {
    Env::with(|name| match name {
        "PORT" => Some("7000".to_owned()),
        _ => None,
    })
}

/// Reads, converts and validates `text`; panics with the errors if it is
/// refused.
pub fn convert_ok(text: &str) -> ConfigFile {
    let reading = read_sources(&[("t.cfg", text.as_bytes())], env())
        .unwrap_or_else(|e| panic!("refused:\n{e}\n--- config:\n{text}"));
    match validate_reading(reading) {
        Ok((_, reading)) => reading.file,
        Err(e) => panic!("invalid:\n{e}\n--- config:\n{text}"),
    }
}

/// The warnings of a config that must be accepted.
pub fn convert_warnings(text: &str) -> Vec<Diag> {
    match read_sources(&[("t.cfg", text.as_bytes())], env()).map(validate_reading) {
        Ok(Ok((_, reading))) => reading.warnings,
        Ok(Err(e)) | Err(e) => panic!("refused:\n{e}\n--- config:\n{text}"),
    }
}

/// The errors of a config that must be refused (reading or validation).
pub fn errors(text: &str) -> Vec<Diag> {
    match read_sources(&[("t.cfg", text.as_bytes())], env()).map(validate_reading) {
        Ok(Ok(_)) => panic!("accepted, expected errors:\n{text}"),
        Ok(Err(e)) | Err(e) => e.errors,
    }
}

/// `text` is refused with an error on `line` containing `reason`.
pub fn assert_error(text: &str, line: usize, reason: &str) {
    let errors = errors(text);
    assert!(
        has_diag(&errors, line, reason),
        "expected an error at line {line} with {reason:?}, got:\n{}\n--- config:\n{text}",
        listed(&errors)
    );
}

/// `warnings` has one on `line` containing `text`.
pub fn assert_warning(warnings: &[Diag], line: usize, text: &str) {
    assert!(
        has_diag(warnings, line, text),
        "expected a warning at line {line} with {text:?}, got:\n{}",
        listed(warnings)
    );
}

/// Whether one of `diags` is on `line` of `t.cfg` and contains `text`.
fn has_diag(diags: &[Diag], line: usize, text: &str) -> bool {
    let wanted = format!("[t.cfg:{line}] : ");
    diags.iter().any(|d| {
        let s = d.to_string();
        s.contains(&wanted) && s.contains(text)
    })
}

/// `diags`, one per line.
fn listed(diags: &[Diag]) -> String {
    diags
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
