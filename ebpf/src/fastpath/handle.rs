//! The [`FastPath`] type: what one loaded program is made of (its maps, the
//! links to interfaces, what userspace last wrote to the service maps).
//! Data only: each job's methods live in the module of that job, and those
//! modules all use this one while the type itself uses none of them (the
//! fields are visible to the `fastpath` modules only).

use crate::batch::Conntrack;
use crate::maps::{
    Config, Flow, FlowKey, MaglevTable, MemberVal, RrTable, ServiceKey, ServiceVal, Stats,
};
use crate::{AttachMode, Options};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::xdp::XdpLinkId;
use aya::Ebpf;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddrV4;

/// What userspace last wrote for one service.
pub(super) struct SvcState {
    pub(super) id: u32,
    pub(super) maglev: Option<u16>,
    pub(super) val: ServiceVal,
    pub(super) members: Vec<MemberVal>,
    pub(super) rr: Vec<u16>,
    pub(super) maglev_table: Option<Vec<u16>>,
}

/// The loaded and attached fast path. Detaches from every interface on drop
/// (the maps and their flows go with it).
///
/// # Lifecycle
///
/// ```text
/// (none)
///   --attach / attach_with-----------------> program loaded, maps created
///                                            empty, SNAT range written, then
///                                            attached to each interface in
///                                            order (native, else generic):
///                                            Attached. Any error: what was
///                                            attached is detached again
/// Attached (no service: every packet goes to the kernel)
///   --set_services (non-empty)-------------> Serving
/// Serving (service maps written; SYNs to a listed VIP:port create flows)
///   --set_services-------------------------> maps rewritten to exactly the
///                                            list: members and services gone
///                                            lose their flows, unusable
///                                            members keep theirs (drain). An
///                                            invalid list changes nothing
///   --set_services (empty)-----------------> every flow deleted: Attached
/// Attached or Serving
///   --set_interfaces-----------------------> detached from the interfaces
///                                            not listed, attached to the new
///                                            ones; maps and flows kept (if an
///                                            attach fails the others stay:
///                                            the caller drops the FastPath)
///   --set_snat_ports-----------------------> range rewritten, flows keep
///                                            their ports
///   --expire_idle (caller's timer, ~1 s)---> idle and closed flows deleted
///   --drop---------------------------------> detached from every interface
///                                            in attach order, then maps and
///                                            program closed: the kernel frees
///                                            them and every flow
/// ```
///
/// Reads (`counters`, `flows`, `flow_table`, `interfaces`, `mode`) change
/// nothing. lbd's control loop (`lbd/src/xdp.rs`) drives the transitions.
pub struct FastPath {
    /// Interface, mode, link; detached in this order on drop.
    pub(super) links: Vec<(String, AttachMode, XdpLinkId)>,
    pub(super) services: BpfHashMap<MapData, ServiceKey, ServiceVal>,
    pub(super) members: Array<MapData, MemberVal>,
    pub(super) rr_tables: Array<MapData, RrTable>,
    pub(super) rr_cursor: Array<MapData, u64>,
    pub(super) maglev_tables: Array<MapData, MaglevTable>,
    pub(super) conntrack: BpfHashMap<MapData, FlowKey, Flow>,
    /// The same map, for batch reads and deletes.
    pub(super) conntrack_batch: Conntrack,
    /// Whether the kernel did batch lookups / deletes on it (until it
    /// refuses once).
    pub(super) batch_lookup: Cell<bool>,
    pub(super) batch_delete: bool,
    pub(super) stats: PerCpuArray<MapData, Stats>,
    pub(super) config: Array<MapData, Config>,
    /// Where the per-member SNAT port cursors start (random per load).
    pub(super) port_offset: u32,
    pub(super) opts: Options,
    pub(super) state: BTreeMap<SocketAddrV4, SvcState>,
    pub(super) free_ids: Vec<u32>,
    pub(super) free_maglev: Vec<u16>,
    /// Last field: programs (and the links still attached) go last.
    pub(super) ebpf: Ebpf,
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
