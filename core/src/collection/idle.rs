//! Convergence after writes go quiet: the idle worker and [`Collection::wait_idle`].
//!
//! While writes arrive, the compaction policy merges by size tiers only, so a bulk load is
//! not taxed by merges of full-size segments. Once no write has arrived for the policy's
//! `quiet` period, the quiet merges (`MergePolicy::pick_idle`) run, and an appendable segment
//! without a write for `seal_idle_after` is sealed. Nothing would ask for that work when no
//! call arrives, so a writer's handle runs a short-lived thread, `trovedb-idle`, from the
//! first write after it converged until it has converged again (it then ends). The thread
//! holds only a weak reference between steps, takes the writer's lock with `try_lock` (a
//! writer never waits for it), and each step only publishes finished work and starts new
//! work on the usual seal and merge threads. `wait_idle()` runs the same steps as if the
//! quiet period had passed. A quiet merge waits for a seal in flight, so that the segment it
//! brings is merged in the same pass.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::collection::{Collection, Role, WriteState};
use crate::error::{Error, Result};

/// How often background work in flight is looked at (the idle worker and `wait_idle`).
const POLL: Duration = Duration::from_millis(20);
/// How often `wait_idle` looks at a seal in flight.
const SEAL_POLL: Duration = Duration::from_millis(2);

/// The earlier of a deadline and the time left until `at` (measured as `elapsed`).
fn sooner(a: Option<Duration>, at: Duration, elapsed: Duration) -> Duration {
    let b = at.saturating_sub(elapsed);
    a.map_or(b, |a| a.min(b))
}

impl Collection {
    /// A write was appended: remember when, and make sure the idle worker runs.
    pub(super) fn note_write_locked(&self, ws: &mut WriteState) {
        ws.last_write = Instant::now();
        self.start_idle_worker_locked(ws);
    }

    /// Start the idle worker unless it runs (or background work is off).
    pub(super) fn start_idle_worker_locked(&self, ws: &mut WriteState) {
        if ws.idle_worker || !self.options.compaction.background {
            return;
        }
        let me: Weak<Collection> = self.me.clone();
        let spawned = std::thread::Builder::new()
            .name("trovedb-idle".into())
            .spawn(move || idle_worker(&me));
        ws.idle_worker = spawned.is_ok();
    }

    /// One step of the idle worker: the time until the next, or `None` when the collection
    /// has converged (or is closed or poisoned) and the worker ends.
    fn idle_step(&self) -> Option<Duration> {
        let Role::Writer { write, .. } = &self.role else {
            return None;
        };
        // A writer, `wait_idle` or `compact` holds the lock: look again shortly.
        let Some(mut ws) = write.try_lock() else {
            return Some(POLL);
        };
        let next = if self.closed.load(Ordering::Acquire) || !self.owner.is_current() {
            None
        } else {
            self.converge_locked(&mut ws, false).ok().flatten()
        };
        if next.is_none() {
            ws.idle_worker = false;
        }
        next
    }

    /// Publish finished background work and start what the policy calls for now; `idle`
    /// (from `wait_idle`) acts as if the quiet periods had passed. The time until something
    /// may change (work in flight, or a quiet period still running), `None` when there is
    /// nothing left to do.
    pub(super) fn converge_locked(
        &self,
        ws: &mut WriteState,
        idle: bool,
    ) -> Result<Option<Duration>> {
        if let Some(first) = ws.poisoned.clone() {
            return Err(Error::Poisoned { first });
        }
        self.publish_finished_locked(ws)?;
        let policy = &self.options.compaction;
        let quiet_for = ws.last_write.elapsed();
        let mut next = ws.sealing.is_some().then_some(POLL);
        if policy.background && self.state.read().appendable.own_rows() > 0 {
            if ws.sealing.is_some() {
                // The appendable segment's turn comes after the seal in flight.
            } else if idle || quiet_for >= policy.seal_idle_after {
                // Writes went quiet: the next segment starts afresh instead of growing on
                // this one, which the quiet merges may then combine with others.
                self.freeze_locked(ws, false)?;
                next = Some(POLL);
            } else {
                next = Some(sooner(next, policy.seal_idle_after, quiet_for));
            }
        }
        // A seal in flight brings one more segment: a quiet merge started before it is
        // published would leave that segment to a second merge, which rewrites every row
        // the first one wrote (1M x 128 in ten 100k segments: nine merged, then 100k into
        // the 900k, 33 s more).
        let quiet = (idle || quiet_for >= policy.quiet) && ws.sealing.is_none();
        if quiet {
            // An appendable segment that grows on a sealed one but holds no row of its own
            // yet would keep that segment out of the quiet merges: start it afresh.
            let mut st = self.state.write();
            if st.appendable.base.is_some() && st.appendable.own_rows() == 0 {
                st.reset_appendable();
            }
        }
        if self.maybe_start_merge_locked(ws, quiet)? {
            next = Some(POLL);
        } else if !quiet && policy.background {
            next = Some(sooner(next, policy.quiet, quiet_for));
        }
        Ok(next)
    }

    /// Wait until the background policy has nothing left to do, publishing each seal and
    /// merge as it finishes: the appendable segment is sealed, and merges run as if writes
    /// had gone quiet (see [`crate::CompactionPolicy`]), so the collection ends in its
    /// converged shape. This is how a caller says "loading is done". Writers are not held
    /// off while the work runs; writes arriving meanwhile extend the wait. With background
    /// compaction off it only waits for a seal in flight. On a read-only handle it returns
    /// at once.
    pub fn wait_idle(&self) -> Result<()> {
        self.check_open()?;
        loop {
            let mut ws = match self.writer("wait_idle") {
                Ok(ws) => ws,
                // A read-only handle runs no background work: idle already.
                Err(Error::ReadOnly { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            self.converge_locked(&mut ws, true)?;
            if ws.sealing.is_none() && ws.merge.is_none() {
                return Ok(());
            }
            // A seal (a bulk load's last one ends the load) is looked at more often than a
            // merge; writers are not held off meanwhile.
            let poll = if ws.sealing.is_some() {
                SEAL_POLL
            } else {
                POLL
            };
            drop(ws);
            std::thread::sleep(poll);
        }
    }
}

/// The idle worker's loop: a step, then sleep for as long as it says, until it says stop or
/// the collection is gone.
fn idle_worker(me: &Weak<Collection>) {
    loop {
        let Some(next) = me.upgrade().and_then(|c: Arc<Collection>| c.idle_step()) else {
            return;
        };
        std::thread::sleep(next.max(Duration::from_millis(1)));
    }
}
