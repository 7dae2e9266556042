//! Loading the XDP program and putting it on interfaces: load with the
//! capacities of [`Options`], attach in native mode or generic (the fallback
//! logged), detach, move to another list of interfaces while keeping the
//! maps (and so every flow), detach from everything on drop. The only part
//! of a `FastPath` that deals with links and interface names; the parts
//! that write maps never do.

use super::error::{attach_error, load_error, map_error};
use super::handle::FastPath;
use super::sys::random_u32;
use crate::batch::Conntrack;
use crate::maps::{Config, MAX_MEMBERS, NO_MAGLEV};
use crate::{AttachMode, Error, Options};
use aya::maps::{Array, Map, MapData};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, Xdp, XdpMode};
use aya::EbpfLoader;
use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::os::fd::AsFd;

const PROG_LB: &str = "xdp_lb";

#[cfg(not(lbd_xdp_unavailable))]
fn lb_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_lb.o"))
}

#[cfg(lbd_xdp_unavailable)]
fn lb_object() -> &'static [u8] {
    &[]
}

/// A non-empty list of distinct interfaces that exist (in the calling
/// thread's network namespace).
fn check_interfaces(interfaces: &[String]) -> Result<(), Error> {
    if interfaces.is_empty() {
        return Err(Error::Invalid("no interfaces to attach to".into()));
    }
    let mut seen = HashSet::new();
    for i in interfaces {
        if !seen.insert(i) {
            return Err(Error::Invalid(format!("interface {i} listed twice")));
        }
        if !interface_exists(i) {
            return Err(Error::NoSuchInterface(i.clone()));
        }
    }
    Ok(())
}

pub(super) fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

pub(super) fn attach_one(
    prog: &mut Xdp,
    interface: &str,
    mode: AttachMode,
) -> Result<XdpLinkId, ProgramError> {
    let m = match mode {
        AttachMode::Native => XdpMode::Driver,
        AttachMode::Generic => XdpMode::Skb,
    };
    prog.attach(interface, m)
}

macro_rules! take_map {
    ($ebpf:expr, $name:literal) => {{
        let map = $ebpf
            .take_map($name)
            .ok_or_else(|| Error::Load(format!("the XDP object has no map {}", $name).into()))?;
        map.try_into().map_err(|e| map_error($name, e))?
    }};
}

impl FastPath {
    /// Loads the program and attaches it to every interface (by name, in the
    /// calling thread's network namespace), native mode first, generic mode
    /// as fallback with a `tracing::warn` naming the interface and the native
    /// error. Same as [`FastPath::attach_with`] with [`Options::default`].
    pub fn attach(interfaces: &[String]) -> Result<FastPath, Error> {
        FastPath::attach_with(interfaces, &Options::default())
    }

    /// [`FastPath::attach`] with capacities and attach mode from `opts`.
    pub fn attach_with(interfaces: &[String], opts: &Options) -> Result<FastPath, Error> {
        if !crate::built() {
            return Err(Error::NotBuilt);
        }
        check_interfaces(interfaces)?;
        if opts.snat_ports.is_empty() {
            return Err(Error::Invalid("empty SNAT port range".into()));
        }
        if opts.max_services == 0 || opts.conntrack_entries < 2 {
            return Err(Error::Invalid(
                "max_services and conntrack_entries must be > 0".into(),
            ));
        }
        if opts.max_maglev_services >= u32::from(NO_MAGLEV) {
            return Err(Error::Invalid("max_maglev_services too large".into()));
        }
        let members_len = opts
            .max_services
            .checked_mul(MAX_MEMBERS as u32)
            .ok_or_else(|| Error::Invalid("max_services too large".into()))?;

        let mut ebpf = EbpfLoader::new()
            .map_max_entries("services", opts.max_services)
            .map_max_entries("members", members_len)
            .map_max_entries("rr_tables", opts.max_services)
            .map_max_entries("rr_cursor", opts.max_services)
            // An array cannot have 0 entries.
            .map_max_entries("maglev_tables", opts.max_maglev_services.max(1))
            .map_max_entries("conntrack", opts.conntrack_entries)
            .load(lb_object())
            .map_err(|e| load_error("loading the XDP program", e))?;

        {
            let prog: &mut Xdp = ebpf
                .program_mut(PROG_LB)
                .ok_or_else(|| Error::Load("the XDP object has no program xdp_lb".into()))?
                .try_into()
                .map_err(|e: ProgramError| load_error("loading the XDP program", e))?;
            prog.load()
                .map_err(|e| load_error("loading the XDP program", e))?;
        }

        let services = take_map!(ebpf, "services");
        let members = take_map!(ebpf, "members");
        let rr_tables = take_map!(ebpf, "rr_tables");
        let rr_cursor = take_map!(ebpf, "rr_cursor");
        let maglev_tables = take_map!(ebpf, "maglev_tables");
        let conntrack_map: Map = ebpf
            .take_map("conntrack")
            .ok_or_else(|| Error::Load("the XDP object has no map conntrack".into()))?;
        let conntrack_fd = match &conntrack_map {
            Map::LruHashMap(data) | Map::HashMap(data) => data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::Load(format!("conntrack map: {e}").into()))?,
            _ => return Err(Error::Load("conntrack is not a hash map".into())),
        };
        let conntrack = conntrack_map
            .try_into()
            .map_err(|e| map_error("conntrack", e))?;
        let stats = take_map!(ebpf, "stats");
        let config: Array<MapData, Config> = take_map!(ebpf, "config");

        let mut fp = FastPath {
            links: Vec::new(),
            services,
            members,
            rr_tables,
            rr_cursor,
            maglev_tables,
            conntrack,
            conntrack_batch: Conntrack::new(conntrack_fd),
            batch_lookup: Cell::new(true),
            batch_delete: true,
            stats,
            config,
            // A fresh start per load, so that a restarted lbd does not hand
            // out the ports its previous run just used (members may still
            // hold them in TIME_WAIT).
            port_offset: random_u32(),
            opts: opts.clone(),
            state: BTreeMap::new(),
            free_ids: (0..opts.max_services).rev().collect(),
            free_maglev: (0..opts.max_maglev_services as u16).rev().collect(),
            ebpf,
        };
        fp.write_config()?;
        // On error, dropping `fp` detaches what was attached so far.
        for interface in interfaces {
            fp.attach_interface(interface)?;
        }
        Ok(fp)
    }

    /// Attaches the loaded program to one more interface: the mode from
    /// the options, else native with generic as the fallback (logged).
    fn attach_interface(&mut self, interface: &str) -> Result<(), Error> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROG_LB)
            .ok_or_else(|| Error::Load("the XDP object has no program xdp_lb".into()))?
            .try_into()
            .map_err(|e: ProgramError| load_error("loading the XDP program", e))?;
        let (mode, link) = match self.opts.mode {
            Some(mode) => {
                let link = attach_one(prog, interface, mode)
                    .map_err(|e| attach_error(interface, format!("{mode:?} mode: {e}"), e))?;
                (mode, link)
            }
            None => match attach_one(prog, interface, AttachMode::Native) {
                Ok(link) => (AttachMode::Native, link),
                Err(native) => {
                    if matches!(native, ProgramError::UnknownInterface { .. }) {
                        return Err(Error::NoSuchInterface(interface.to_string()));
                    }
                    tracing::warn!(
                        interface,
                        error = %native,
                        "native XDP attach failed; falling back to generic (skb) mode, \
                         which is slower"
                    );
                    let link = attach_one(prog, interface, AttachMode::Generic).map_err(|e| {
                        attach_error(
                            interface,
                            format!("native mode: {native}; generic mode: {e}"),
                            e,
                        )
                    })?;
                    (AttachMode::Generic, link)
                }
            },
        };
        tracing::info!(interface, ?mode, "XDP fast path attached");
        self.links.push((interface.to_string(), mode, link));
        Ok(())
    }

    /// Detaches the program from the interfaces `keep` says no to (logged).
    fn detach_interfaces(&mut self, keep: impl Fn(&str) -> bool) {
        let (stay, go): (Vec<_>, Vec<_>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|(interface, _, _)| keep(interface));
        self.links = stay;
        let Some(Ok(prog)) = self.ebpf.program_mut(PROG_LB).map(<&mut Xdp>::try_from) else {
            return;
        };
        for (interface, mode, link) in go {
            match prog.detach(link) {
                Ok(()) => tracing::info!(
                    interface = interface.as_str(),
                    ?mode,
                    "XDP fast path detached"
                ),
                Err(e) => tracing::warn!(
                    interface = interface.as_str(),
                    error = %e,
                    "detaching the XDP fast path failed"
                ),
            }
        }
    }

    /// Attaches to exactly `interfaces` (names in the calling thread's
    /// network namespace, as for [`FastPath::attach`]), keeping the loaded
    /// program, its maps and so every flow: detaches from the interfaces no
    /// longer listed, attaches to the new ones. A list with an unknown or
    /// repeated name changes nothing; if attaching to a new interface
    /// fails, the ones attached so far stay attached (the caller decides:
    /// lbd then drops the whole fast path).
    pub fn set_interfaces(&mut self, interfaces: &[String]) -> Result<(), Error> {
        check_interfaces(interfaces)?;
        self.detach_interfaces(|i| interfaces.iter().any(|w| w == i));
        for interface in interfaces {
            if self.mode(interface).is_none() {
                self.attach_interface(interface)?;
            }
        }
        Ok(())
    }

    /// The interfaces the program is attached to, in attach order.
    pub fn interfaces(&self) -> Vec<String> {
        self.links.iter().map(|(i, _, _)| i.clone()).collect()
    }

    /// How `interface` runs the program (`None`: not attached to it).
    pub fn mode(&self, interface: &str) -> Option<AttachMode> {
        self.links
            .iter()
            .find(|(i, _, _)| i == interface)
            .map(|(_, m, _)| *m)
    }

    /// The options it was attached with (`snat_ports` as last set).
    pub fn options(&self) -> &Options {
        &self.opts
    }
}

impl Drop for FastPath {
    fn drop(&mut self) {
        self.detach_interfaces(|_| false);
    }
}
