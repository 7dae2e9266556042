//! The do-nothing `XDP_PASS` program for veth peers ([`attach_pass`]): a
//! veth in native mode delivers `XDP_TX` / `XDP_REDIRECT` frames only if its
//! peer has an XDP program (or GRO). A separate object without maps, so it
//! has its own guard instead of being part of a `FastPath`.

use super::attach::{attach_one, interface_exists};
use super::error::{attach_error, load_error};
use crate::{AttachMode, Error};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, Xdp};
use aya::Ebpf;

const PROG_PASS: &str = "xdp_pass";

#[cfg(not(lbd_xdp_unavailable))]
fn pass_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_pass.o"))
}

#[cfg(lbd_xdp_unavailable)]
fn pass_object() -> &'static [u8] {
    &[]
}

/// The pass-only XDP program attached to one interface; detached on drop.
pub struct PassGuard {
    interface: String,
    link: Option<XdpLinkId>,
    ebpf: Ebpf,
}

impl std::fmt::Debug for PassGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassGuard")
            .field("interface", &self.interface)
            .finish()
    }
}

impl PassGuard {
    pub fn interface(&self) -> &str {
        &self.interface
    }
}

impl Drop for PassGuard {
    fn drop(&mut self) {
        if let Some(link) = self.link.take() {
            if let Some(prog) = self.ebpf.program_mut(PROG_PASS) {
                let prog: Result<&mut Xdp, _> = prog.try_into();
                if let Ok(prog) = prog {
                    if let Err(e) = prog.detach(link) {
                        tracing::warn!(
                            interface = self.interface.as_str(),
                            error = %e,
                            "detaching the XDP pass program failed"
                        );
                    }
                }
            }
        }
    }
}

/// Attaches a do-nothing `XDP_PASS` program to `interface` (in the calling
/// thread's network namespace) in native mode. For the peers of veths that
/// receive the fast path's `XDP_TX` / `XDP_REDIRECT` frames in native mode
/// (veth drops those unless its peer has an XDP program or GRO). Detaches on
/// drop. Creates no maps.
pub fn attach_pass(interface: &str) -> Result<PassGuard, Error> {
    if !crate::built() {
        return Err(Error::NotBuilt);
    }
    if !interface_exists(interface) {
        return Err(Error::NoSuchInterface(interface.to_string()));
    }
    let mut ebpf = Ebpf::load(pass_object()).map_err(|e| load_error("loading xdp_pass", e))?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROG_PASS)
        .ok_or_else(|| Error::Load("the XDP object has no program xdp_pass".into()))?
        .try_into()
        .map_err(|e: ProgramError| load_error("loading xdp_pass", e))?;
    prog.load().map_err(|e| load_error("loading xdp_pass", e))?;
    let link = attach_one(prog, interface, AttachMode::Native)
        .map_err(|e| attach_error(interface, format!("native mode: {e}"), e))?;
    Ok(PassGuard {
        interface: interface.to_string(),
        link: Some(link),
        ebpf,
    })
}
