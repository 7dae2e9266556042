//! Loading, attaching and the userspace side of the maps.

use crate::batch::{BatchError, Conntrack};
use crate::maps::{
    be_ip, be_port, ip_from_be, port_from_be, Config, Flow, FlowKey, MaglevTable, MemberVal,
    RrTable, ServiceKey, ServiceVal, Stats, DIR_ORIGINAL, DIR_REPLY, DROP_REASONS, FLOW_FIN,
    FLOW_RST, MAGLEV_ALLOC, MAGLEV_TABLE_SIZE, MAX_MEMBERS, NO_MAGLEV, PASS_REASONS, RR_SLOTS,
    SVC_FULL,
};
use crate::select::smooth_weighted_slots;
use crate::{AttachMode, Counters, Error, Options, Selection, Service};
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddrV4;
use std::ops::RangeInclusive;
use std::os::fd::AsFd;
use std::time::Duration;

/// Closed flows (RST seen, or FIN seen both ways) are expired after at most
/// this long, whatever `idle` [`FastPath::expire_idle`] gets.
pub const CLOSED_LINGER: Duration = Duration::from_secs(10);

const PROG_LB: &str = "xdp_lb";
const PROG_PASS: &str = "xdp_pass";

#[cfg(not(lbd_xdp_unavailable))]
fn lb_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_lb.o"))
}
#[cfg(not(lbd_xdp_unavailable))]
fn pass_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_pass.o"))
}
#[cfg(lbd_xdp_unavailable)]
fn lb_object() -> &'static [u8] {
    &[]
}
#[cfg(lbd_xdp_unavailable)]
fn pass_object() -> &'static [u8] {
    &[]
}

/// Does `err` (or anything in its source chain) carry `errno`?
fn has_errno(err: &(dyn std::error::Error + 'static), errno: i32) -> bool {
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

fn load_error<E: std::error::Error + Send + Sync + 'static>(what: &str, e: E) -> Error {
    if has_errno(&e, libc::EPERM) {
        Error::PermissionDenied {
            what: what.to_string(),
            source: Box::new(e),
        }
    } else {
        Error::Load(Box::new(e))
    }
}

fn map_error(map: &'static str, e: MapError) -> Error {
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

fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

fn attach_one(
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

fn attach_error(interface: &str, message: String, e: ProgramError) -> Error {
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

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A random u32 from the kernel (getrandom); the clock if that fails.
fn random_u32() -> u32 {
    let mut buf = [0u8; 4];
    // SAFETY: writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == buf.len() as isize {
        u32::from_ne_bytes(buf)
    } else {
        monotonic_ns() as u32
    }
}

/// What userspace last wrote for one service.
struct SvcState {
    id: u32,
    maglev: Option<u16>,
    val: ServiceVal,
    members: Vec<MemberVal>,
    rr: Vec<u16>,
    maglev_table: Option<Vec<u16>>,
}

/// The loaded and attached fast path. Detaches from every interface on drop
/// (the maps and their flows go with it).
pub struct FastPath {
    /// Interface, mode, link; detached in this order on drop.
    links: Vec<(String, AttachMode, XdpLinkId)>,
    services: BpfHashMap<MapData, ServiceKey, ServiceVal>,
    members: Array<MapData, MemberVal>,
    rr_tables: Array<MapData, RrTable>,
    rr_cursor: Array<MapData, u64>,
    maglev_tables: Array<MapData, MaglevTable>,
    conntrack: BpfHashMap<MapData, FlowKey, Flow>,
    /// The same map, for batch reads and deletes.
    conntrack_batch: Conntrack,
    /// Whether the kernel did batch lookups / deletes on it (until it
    /// refuses once).
    batch_lookup: Cell<bool>,
    batch_delete: bool,
    stats: PerCpuArray<MapData, Stats>,
    config: Array<MapData, Config>,
    /// Where the per-member SNAT port cursors start (random per load).
    port_offset: u32,
    opts: Options,
    state: BTreeMap<SocketAddrV4, SvcState>,
    free_ids: Vec<u32>,
    free_maglev: Vec<u16>,
    /// Last field: programs (and the links still attached) go last.
    ebpf: Ebpf,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field(
                "links",
                &self.links.iter().map(|l| (&l.0, l.1)).collect::<Vec<_>>(),
            )
            .field("services", &self.state.keys().collect::<Vec<_>>())
            .finish()
    }
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

    /// Changes the SNAT port range for new flows. Established flows keep
    /// their ports (and stay unique per member: a port is taken only if no
    /// flow holds it).
    pub fn set_snat_ports(&mut self, ports: RangeInclusive<u16>) -> Result<(), Error> {
        if ports.is_empty() {
            return Err(Error::Invalid("empty SNAT port range".into()));
        }
        let old = std::mem::replace(&mut self.opts.snat_ports, ports);
        self.write_config()
            .inspect_err(|_| self.opts.snat_ports = old)
    }

    /// Writes the program's `config` map from `opts.snat_ports`.
    fn write_config(&mut self) -> Result<(), Error> {
        let (lo, hi) = (*self.opts.snat_ports.start(), *self.opts.snat_ports.end());
        let config = Config {
            port_min: lo,
            pad0: 0,
            port_count: u32::from(hi - lo) + 1,
            port_offset: self.port_offset,
            pad1: 0,
        };
        self.config
            .set(0, config, 0)
            .map_err(|e| map_error("config", e))
    }

    /// Makes the kernel maps say exactly `services`: services not listed are
    /// removed (with their flows), members not listed lose their flows
    /// (later packets of those flows go to the kernel, which resets them),
    /// members with `usable == false` get no new flows (their flows go on).
    /// Members are identified by address: a member listed again keeps its
    /// flows, whatever its position. Validates everything before changing
    /// anything. While it runs, new flows may be balanced by the old or the
    /// new tables, never to a member that is unusable or gone.
    pub fn set_services(&mut self, services: &[Service]) -> Result<(), Error> {
        self.validate(services)?;
        let wanted: HashSet<SocketAddrV4> = services.iter().map(|s| s.vip).collect();

        // Members gone from a service that stays, or services gone: their
        // flows must end.
        let mut cleanup = false;
        for (vip, st) in &self.state {
            match services.iter().find(|s| s.vip == *vip) {
                None => cleanup = true,
                Some(s) => {
                    let new: HashSet<(u32, u16)> = s
                        .members
                        .iter()
                        .map(|m| (be_ip(*m.addr.ip()), be_port(m.addr.port())))
                        .collect();
                    if st
                        .members
                        .iter()
                        .any(|m| m.ip != 0 && !new.contains(&(m.ip, m.port)))
                    {
                        cleanup = true;
                    }
                }
            }
        }

        // 1. Services no longer listed: no new flows from now on.
        let removed: Vec<SocketAddrV4> = self
            .state
            .keys()
            .filter(|v| !wanted.contains(v))
            .copied()
            .collect();
        for vip in &removed {
            self.remove_service_entry(*vip)?;
        }

        // 2. Listed services: members, tables, then the service entry.
        for svc in services {
            self.upsert(svc)?;
        }

        // 3. Flows of removed members / services.
        if cleanup {
            self.delete_stale_flows(&wanted)?;
        }

        // 4. Recycle the removed services' slots (their flows are gone).
        for vip in removed {
            if let Some(st) = self.state.remove(&vip) {
                let zero = MemberVal::default();
                for (i, m) in st.members.iter().enumerate() {
                    if *m != zero {
                        let idx = st.id * MAX_MEMBERS as u32 + i as u32;
                        self.members
                            .set(idx, zero, 0)
                            .map_err(|e| map_error("members", e))?;
                    }
                }
                self.free_ids.push(st.id);
                if let Some(m) = st.maglev {
                    self.free_maglev.push(m);
                }
            }
        }
        Ok(())
    }

    fn validate(&self, services: &[Service]) -> Result<(), Error> {
        let mut vips = HashSet::new();
        let mut new_services = 0usize;
        let mut new_maglev = 0usize;
        for s in services {
            if !vips.insert(s.vip) {
                return Err(Error::Invalid(format!("service {} listed twice", s.vip)));
            }
            if s.snat_ip.is_unspecified() {
                return Err(Error::Invalid(format!(
                    "service {}: snat_ip is 0.0.0.0",
                    s.vip
                )));
            }
            if s.members.len() > MAX_MEMBERS {
                return Err(Error::Invalid(format!(
                    "service {}: {} members, at most {MAX_MEMBERS}",
                    s.vip,
                    s.members.len()
                )));
            }
            let mut addrs = HashSet::new();
            for m in &s.members {
                if m.addr.ip().is_unspecified() {
                    return Err(Error::Invalid(format!(
                        "service {}: member address {} is unspecified",
                        s.vip, m.addr
                    )));
                }
                if !addrs.insert(m.addr) {
                    return Err(Error::Invalid(format!(
                        "service {}: member {} listed twice",
                        s.vip, m.addr
                    )));
                }
            }
            let is_maglev = matches!(s.selection, Selection::Maglev(_));
            if let Selection::Maglev(table) = &s.selection {
                if table.len() != MAGLEV_TABLE_SIZE {
                    return Err(Error::Invalid(format!(
                        "service {}: Maglev table has {} entries, must have {MAGLEV_TABLE_SIZE}",
                        s.vip,
                        table.len()
                    )));
                }
                if let Some(bad) = table.iter().find(|&&i| usize::from(i) >= s.members.len()) {
                    return Err(Error::Invalid(format!(
                        "service {}: Maglev table refers to member {bad}, there are {}",
                        s.vip,
                        s.members.len()
                    )));
                }
            }
            match self.state.get(&s.vip) {
                None => {
                    new_services += 1;
                    new_maglev += usize::from(is_maglev);
                }
                Some(st) => {
                    if is_maglev && st.maglev.is_none() {
                        new_maglev += 1;
                    }
                }
            }
        }
        let removed: Vec<&SvcState> = self
            .state
            .iter()
            .filter(|(v, _)| !vips.contains(v))
            .map(|(_, st)| st)
            .collect();
        // Slots of removed services are recycled only at the end of
        // set_services, so new services need free slots now.
        if new_services > self.free_ids.len() {
            return Err(Error::Invalid(format!(
                "{} services, at most {} (Options::max_services)",
                self.state.len() - removed.len() + new_services,
                self.opts.max_services
            )));
        }
        // Likewise Maglev slots (a service switching to round robin frees
        // its slot only after its entry stops pointing at it).
        if new_maglev > self.free_maglev.len() {
            return Err(Error::Invalid(format!(
                "too many Maglev services, at most {} (Options::max_maglev_services)",
                self.opts.max_maglev_services
            )));
        }
        Ok(())
    }

    fn remove_service_entry(&mut self, vip: SocketAddrV4) -> Result<(), Error> {
        match self.services.remove(&ServiceKey::new(vip)) {
            Ok(()) => Ok(()),
            Err(e) if has_errno(&e, libc::ENOENT) => Ok(()),
            Err(e) => Err(map_error("services", e)),
        }
    }

    fn upsert(&mut self, svc: &Service) -> Result<(), Error> {
        let is_new = !self.state.contains_key(&svc.vip);
        if is_new {
            let id = self.free_ids.pop().expect("validated");
            // A recycled slot starts from a clean cursor.
            self.rr_cursor
                .set(id, 0u64, 0)
                .map_err(|e| map_error("rr_cursor", e))?;
            self.state.insert(
                svc.vip,
                SvcState {
                    id,
                    maglev: None,
                    val: ServiceVal::default(),
                    members: Vec::new(),
                    rr: Vec::new(),
                    maglev_table: None,
                },
            );
        }
        let st = self.state.get_mut(&svc.vip).expect("inserted above");
        let id = st.id;

        // Members: changed slots, and clear slots no longer used.
        let new_members: Vec<MemberVal> = svc
            .members
            .iter()
            .map(|m| MemberVal {
                ip: be_ip(*m.addr.ip()),
                port: be_port(m.addr.port()),
                usable: u8::from(m.usable),
                pad: 0,
            })
            .collect();
        let n = new_members.len().max(st.members.len());
        for i in 0..n {
            let new = new_members.get(i).copied().unwrap_or_default();
            let old = st.members.get(i).copied().unwrap_or_default();
            if is_new || new != old {
                self.members
                    .set(id * MAX_MEMBERS as u32 + i as u32, new, 0)
                    .map_err(|e| map_error("members", e))?;
            }
        }
        st.members = new_members;

        // Round-robin table: usable members with weight > 0 (also the
        // fallback of Maglev services).
        let weights: Vec<(u16, u32)> = svc
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.usable)
            .map(|(i, m)| (i as u16, m.weight))
            .collect();
        let rr = smooth_weighted_slots(&weights);
        if is_new || rr != st.rr {
            let mut table: RrTable = [0; RR_SLOTS];
            table[..rr.len()].copy_from_slice(&rr);
            self.rr_tables
                .set(id, table, 0)
                .map_err(|e| map_error("rr_tables", e))?;
            st.rr = rr;
        }

        // Maglev table.
        let mut freed_maglev = None;
        match &svc.selection {
            Selection::Maglev(table) => {
                let slot = match st.maglev {
                    Some(m) => m,
                    None => {
                        let m = self.free_maglev.pop().expect("validated");
                        st.maglev = Some(m);
                        st.maglev_table = None;
                        m
                    }
                };
                if st.maglev_table.as_deref() != Some(table.as_slice()) {
                    let mut full: Box<MaglevTable> = vec![0u16; MAGLEV_ALLOC]
                        .into_boxed_slice()
                        .try_into()
                        .expect("MAGLEV_ALLOC entries");
                    full[..MAGLEV_TABLE_SIZE].copy_from_slice(table);
                    self.maglev_tables
                        .set(u32::from(slot), full.as_ref(), 0)
                        .map_err(|e| map_error("maglev_tables", e))?;
                    st.maglev_table = Some(table.clone());
                }
            }
            Selection::RoundRobin => {
                freed_maglev = st.maglev.take();
                st.maglev_table = None;
            }
        }

        let val = ServiceVal {
            id,
            snat_ip: be_ip(svc.snat_ip),
            rr_len: st.rr.len() as u16,
            maglev: st.maglev.unwrap_or(NO_MAGLEV),
            members: svc.members.len() as u16,
            flags: if svc.full { SVC_FULL } else { 0 },
        };
        if is_new || val != st.val {
            self.services
                .insert(ServiceKey::new(svc.vip), val, 0)
                .map_err(|e| map_error("services", e))?;
            st.val = val;
        }
        if let Some(m) = freed_maglev {
            self.free_maglev.push(m);
        }
        Ok(())
    }

    /// Most entries any walk over the conntrack map visits (an LRU map
    /// changes under the walk: get_next_key may restart from the start).
    fn walk_limit(&self) -> usize {
        self.opts.conntrack_entries as usize * 2 + 1024
    }

    /// A snapshot of the conntrack map: batch reads (a few syscalls), or
    /// a walk (two per entry) where the kernel does not do them.
    fn snapshot(&self) -> Result<HashMap<FlowKey, Flow>, Error> {
        if self.batch_lookup.get() {
            match self.conntrack_batch.read_all() {
                Ok(entries) => return Ok(entries.into_iter().collect()),
                Err(BatchError::Unsupported) => {
                    tracing::info!("conntrack: no batch lookups on this kernel; walking the map");
                    self.batch_lookup.set(false);
                }
                Err(BatchError::Io(e)) => {
                    return Err(Error::Map {
                        map: "conntrack",
                        source: Box::new(e),
                    })
                }
            }
        }
        let mut out = HashMap::new();
        for item in self.conntrack.iter().take(self.walk_limit()) {
            match item {
                Ok((k, v)) => {
                    out.insert(k, v);
                }
                // Deleted between get_next_key and lookup: skip it.
                Err(MapError::KeyNotFound) => {}
                Err(e) if has_errno(&e, libc::ENOENT) => {}
                Err(e) => return Err(map_error("conntrack", e)),
            }
        }
        Ok(out)
    }

    /// Deletes conntrack entries (those already gone are skipped): in
    /// batches, or one by one where the kernel does not do batch deletes.
    fn delete_flow_entries(&mut self, keys: &[FlowKey]) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        if self.batch_delete {
            match self.conntrack_batch.delete(keys) {
                Ok(_) => return Ok(()),
                Err(BatchError::Unsupported) => {
                    tracing::info!("conntrack: no batch deletes on this kernel; one by one");
                    self.batch_delete = false;
                }
                Err(BatchError::Io(e)) => {
                    return Err(Error::Map {
                        map: "conntrack",
                        source: Box::new(e),
                    })
                }
            }
        }
        for key in keys {
            match self.conntrack.remove(key) {
                Ok(()) => {}
                Err(e) if has_errno(&e, libc::ENOENT) => {}
                Err(e) => return Err(map_error("conntrack", e)),
            }
        }
        Ok(())
    }

    /// Deletes the flows whose service or member is no longer configured.
    fn delete_stale_flows(&mut self, wanted: &HashSet<SocketAddrV4>) -> Result<usize, Error> {
        let mut valid: HashMap<(u32, u16), HashSet<(u32, u16)>> = HashMap::new();
        for (vip, st) in &self.state {
            if !wanted.contains(vip) {
                continue;
            }
            let set = valid
                .entry((be_ip(*vip.ip()), be_port(vip.port())))
                .or_default();
            for m in &st.members {
                set.insert((m.ip, m.port));
            }
        }
        let snap = self.snapshot()?;
        let mut doomed = Vec::new();
        for (k, f) in &snap {
            let (vip, member) = match f.dir {
                DIR_ORIGINAL => ((k.daddr, k.dport), (f.nat_daddr, f.nat_dport)),
                DIR_REPLY => ((f.nat_saddr, f.nat_sport), (k.saddr, k.sport)),
                _ => continue,
            };
            let ok = valid.get(&vip).is_some_and(|m| m.contains(&member));
            if !ok {
                doomed.push((*k, f.dir == DIR_ORIGINAL));
            }
        }
        let flows = doomed.iter().filter(|(_, original)| *original).count();
        let keys: Vec<FlowKey> = doomed.into_iter().map(|(k, _)| k).collect();
        self.delete_flow_entries(&keys)?;
        if flows > 0 {
            tracing::debug!(flows, "deleted fast-path flows of removed members/services");
        }
        Ok(flows)
    }

    /// Counters summed over CPUs.
    pub fn counters(&self) -> Result<Counters, Error> {
        let per_cpu = self.stats.get(&0, 0).map_err(|e| map_error("stats", e))?;
        let mut c = Counters::default();
        let mut drops = [0u64; crate::maps::DROP_MAX];
        let mut passes = [0u64; crate::maps::PASS_MAX];
        for s in per_cpu.iter() {
            c.packets += s.packets;
            c.bytes += s.bytes;
            c.new_flows += s.new_flows;
            for (d, v) in drops.iter_mut().zip(s.drops.iter()) {
                *d += v;
            }
            for (p, v) in passes.iter_mut().zip(s.passes.iter()) {
                *p += v;
            }
        }
        c.drops = DROP_REASONS.iter().copied().zip(drops).collect();
        c.passes = PASS_REASONS.iter().copied().zip(passes).collect();
        Ok(c)
    }

    /// Deletes the flows idle for longer than `idle` (closed flows: RST
    /// seen, or FIN seen in both directions, after `min(idle,
    /// CLOSED_LINGER)`). Reads the whole conntrack map (in batches where the
    /// kernel can): call it every second or so, not per packet. An idle
    /// open flow is read again just before it is deleted, in case a packet
    /// came meanwhile; a closed one is not (that would cost two syscalls
    /// per connection): a client reopening the same 4-tuple in the
    /// milliseconds between the read and the delete, after more than the
    /// linger time, loses that connection (its next packet goes to the
    /// kernel, which resets it).
    pub fn expire_idle(&mut self, idle: Duration) -> Result<Expiry, Error> {
        let idle_ns = idle.as_nanos().min(u128::from(u64::MAX)) as u64;
        let closed_ns = idle.min(CLOSED_LINGER).as_nanos() as u64;
        let snap = self.snapshot()?;
        let now = monotonic_ns();
        let closed = |a: &Flow, b: Option<&Flow>| {
            let flags = a.flags | b.map_or(0, |b| b.flags);
            flags & FLOW_RST != 0 || b.is_some_and(|b| a.flags & b.flags & FLOW_FIN != 0)
        };
        let expired = |a: &Flow, b: Option<&Flow>| {
            let last = b.map_or(a.last_seen_ns, |b| a.last_seen_ns.max(b.last_seen_ns));
            let limit = if closed(a, b) { closed_ns } else { idle_ns };
            now.saturating_sub(last) > limit
        };
        let mut doomed = Vec::new();
        let mut flows = 0;
        let mut ended = 0;
        let mut open: HashMap<SocketAddrV4, usize> = HashMap::new();
        for (k, f) in &snap {
            let other_key = f.other_key();
            let other = snap.get(&other_key);
            let orphan = other.is_none_or(|o| o.other_key() != *k);
            match (f.dir, orphan) {
                (DIR_ORIGINAL, _) => flows += 1,
                // Handled with its original entry.
                (DIR_REPLY, false) => continue,
                // A reply entry whose original is gone (LRU eviction).
                (DIR_REPLY, true) => {}
                _ => continue,
            }
            let other = if orphan { None } else { other };
            if !expired(f, other) {
                if f.dir == DIR_ORIGINAL && !closed(f, other) {
                    let vip = SocketAddrV4::new(ip_from_be(k.daddr), port_from_be(k.dport));
                    *open.entry(vip).or_default() += 1;
                }
                continue;
            }
            if !closed(f, other) {
                // Re-read: a packet may have arrived since the snapshot.
                let Ok(f_now) = self.conntrack.get(k, 0) else {
                    continue;
                };
                let other_now = if orphan {
                    None
                } else {
                    self.conntrack.get(&other_key, 0).ok()
                };
                if !expired(&f_now, other_now.as_ref()) {
                    continue;
                }
            }
            doomed.push(*k);
            if !orphan {
                doomed.push(other_key);
            }
            if f.dir == DIR_ORIGINAL {
                ended += 1;
            }
        }
        self.delete_flow_entries(&doomed)?;
        Ok(Expiry {
            ended,
            flows: flows - ended,
            open,
        })
    }

    /// Whether conntrack reads and deletes still go in batches (the kernel
    /// has not refused them; Linux 5.6+ does them).
    pub fn uses_batches(&self) -> bool {
        self.batch_lookup.get() && self.batch_delete
    }

    /// Current flows (original-direction conntrack entries). Walks the map.
    pub fn flows(&self) -> Result<usize, Error> {
        Ok(self
            .snapshot()?
            .values()
            .filter(|f| f.dir == DIR_ORIGINAL)
            .count())
    }

    /// Current flows as (client, vip, snat address, member), for
    /// diagnostics and tests. Walks the map.
    pub fn flow_table(&self) -> Result<Vec<FlowInfo>, Error> {
        let snap = self.snapshot()?;
        let mut out: Vec<FlowInfo> = snap
            .iter()
            .filter(|(_, f)| f.dir == DIR_ORIGINAL)
            .map(|(k, f)| {
                let other = snap.get(&f.other_key());
                FlowInfo {
                    client: SocketAddrV4::new(ip_from_be(k.saddr), port_from_be(k.sport)),
                    vip: SocketAddrV4::new(ip_from_be(k.daddr), port_from_be(k.dport)),
                    snat: SocketAddrV4::new(ip_from_be(f.nat_saddr), port_from_be(f.nat_sport)),
                    member: SocketAddrV4::new(ip_from_be(f.nat_daddr), port_from_be(f.nat_dport)),
                    closed: {
                        let flags = f.flags | other.map_or(0, |o| o.flags);
                        flags & FLOW_RST != 0
                            || other.is_some_and(|o| f.flags & o.flags & FLOW_FIN != 0)
                    },
                    reply_entry: other.is_some(),
                }
            })
            .collect();
        out.sort_by_key(|f| (f.vip, f.client));
        Ok(out)
    }
}

/// What [`FastPath::expire_idle`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expiry {
    /// Flows that ended (deleted).
    pub ended: usize,
    /// Flows left in the table.
    pub flows: usize,
    /// Of those, the open ones (no RST, not FIN both ways) by VIP:port.
    pub open: HashMap<SocketAddrV4, usize>,
}

/// One fast-path flow, see [`FastPath::flow_table`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub client: SocketAddrV4,
    pub vip: SocketAddrV4,
    /// The translated source: `snat_ip`:port.
    pub snat: SocketAddrV4,
    pub member: SocketAddrV4,
    /// RST seen, or FIN seen in both directions.
    pub closed: bool,
    /// The reply-direction entry exists.
    pub reply_entry: bool,
}

impl Drop for FastPath {
    fn drop(&mut self) {
        self.detach_interfaces(|_| false);
    }
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

const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<FastPath>();
    assert_send::<PassGuard>();
};
