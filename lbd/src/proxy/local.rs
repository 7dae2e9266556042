//! What a worker thread lends the connections it accepts: its id (which
//! counter slot to write), its counters, its buffers and pipes and its view of
//! the current config. One per worker thread, shared by its connection
//! tasks through an `Rc`; nothing in it is shared with another thread
//! except through [`Shared`].

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::context::Shared;
use crate::pick::LocalView;
use crate::state::WorkerCounters;

use super::buffers::BufPool;
use super::pipes::PipePool;
use super::sessions::Sessions;

pub struct Local {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub counters: Arc<WorkerCounters>,
    pub bufs: BufPool,
    /// Pipes for listeners with `splice`.
    pub pipes: PipePool,
    /// Connections of pools with `on_down` / `on_maint`.
    pub sessions: Sessions,
    view: RefCell<Rc<LocalView>>,
}

impl Local {
    /// The state of worker `id` of `shared`.
    pub fn new(id: usize, shared: Arc<Shared>) -> Self {
        let view = RefCell::new(Rc::new(LocalView::new(shared.snapshot(), None)));
        Local {
            id,
            counters: Arc::clone(&shared.workers[id]),
            shared,
            bufs: BufPool::default(),
            pipes: PipePool::default(),
            sessions: Sessions::default(),
            view,
        }
    }

    /// The current snapshot's view; rebuilt only when a reload published a
    /// new snapshot (one pointer comparison otherwise).
    pub fn view(&self) -> Rc<LocalView> {
        let current = self.shared.load_snapshot();
        if !Arc::ptr_eq(&current, &self.view.borrow().snap) {
            let next = LocalView::new(
                arc_swap::Guard::into_inner(current),
                Some(&self.view.borrow()),
            );
            *self.view.borrow_mut() = Rc::new(next);
        }
        Rc::clone(&self.view.borrow())
    }
}
