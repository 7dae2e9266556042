//! Turning aya's and the kernel's errors into [`Error`]. One place decides
//! which failure means "not allowed" (EPERM anywhere in the source chain), so
//! loading, attaching and every map operation report a missing capability
//! the same way, as [`Error::PermissionDenied`].

use crate::Error;
use aya::maps::MapError;
use aya::programs::ProgramError;

/// Does `err` (or anything in its source chain) carry `errno`?
pub(super) fn has_errno(err: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(errno) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

pub(super) fn load_error<E: std::error::Error + Send + Sync + 'static>(what: &str, e: E) -> Error {
    if has_errno(&e, libc::EPERM) {
        Error::PermissionDenied {
            what: what.to_string(),
            source: Box::new(e),
        }
    } else {
        Error::Load(Box::new(e))
    }
}

pub(super) fn map_error(map: &'static str, e: MapError) -> Error {
    if has_errno(&e, libc::EPERM) {
        Error::PermissionDenied {
            what: format!("using BPF map {map}"),
            source: Box::new(e),
        }
    } else {
        Error::Map {
            map,
            source: Box::new(e),
        }
    }
}

pub(super) fn attach_error(interface: &str, message: String, e: ProgramError) -> Error {
    if matches!(e, ProgramError::UnknownInterface { .. }) {
        return Error::NoSuchInterface(interface.to_string());
    }
    if has_errno(&e, libc::EPERM) {
        return Error::PermissionDenied {
            what: format!("attaching XDP to {interface}"),
            source: Box::new(e),
        };
    }
    Error::Attach {
        interface: interface.to_string(),
        message,
        source: Box::new(e),
    }
}
