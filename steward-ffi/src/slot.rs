//! The slot that takes over a C callback triple: `call` runs only while it is open, and
//! `drop` runs exactly once, after the last `call`.

use std::ffi::c_void;
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::boundary::CallbackScope;
use crate::error::FfiError;

type DropFn = unsafe extern "C" fn(*mut c_void);

/// A callback triple taken over from C. `call` runs only while the slot is open; `drop` runs
/// exactly once, when the slot is closed (or dropped) and no call is in flight.
pub(crate) struct Slot<F: Copy> {
    context: *mut c_void,
    call: F,
    drop_fn: Option<DropFn>,
    node_id: u64,
    state: Mutex<SlotState>,
    idle: Condvar,
}

#[derive(Default)]
struct SlotState {
    closed: bool,
    in_flight: usize,
    /// Threads (by id) inside `call` right now, so a close from inside a call does not wait
    /// for itself.
    callers: Vec<std::thread::ThreadId>,
    dropped: bool,
}

// SAFETY: the C caller promises (as documented in the header) that `context` may be used from
// the threads the callback is documented to run on; the slot itself serialises `drop`.
unsafe impl<F: Copy> Send for Slot<F> {}
unsafe impl<F: Copy> Sync for Slot<F> {}

impl<F: Copy> Slot<F> {
    /// Takes over a triple; `call` must already be checked non-NULL.
    pub(crate) fn new(
        context: *mut c_void,
        call: F,
        drop_fn: Option<DropFn>,
        node_id: u64,
    ) -> Self {
        Slot {
            context,
            call,
            drop_fn,
            node_id,
            state: Mutex::new(SlotState::default()),
            idle: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f(context, call)` unless the slot is closed; returns whether it ran.
    pub(crate) fn invoke(&self, f: impl FnOnce(*mut c_void, F)) -> bool {
        {
            let mut st = self.lock();
            if st.closed {
                return false;
            }
            st.in_flight += 1;
            st.callers.push(std::thread::current().id());
        }
        let _scope = CallbackScope::enter(self.node_id);
        let _done = InFlight(self);
        // A panic in our own code around the call must not skip the bookkeeping above.
        let _ =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self.context, self.call)));
        true
    }

    /// Stops further calls and waits until no call is in flight (unless called from inside a
    /// call on this thread: then `drop` runs when that call returns). `drop` runs once.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        let me = std::thread::current().id();
        if st.callers.contains(&me) {
            return;
        }
        while st.in_flight > 0 {
            st = self.idle.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        self.run_drop(st);
    }

    /// Hands the triple back to C untouched: no more calls, and `drop` will not run (used when
    /// taking the callback over failed, so the caller still owns its context).
    pub(crate) fn disarm(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.dropped = true;
    }

    fn run_drop(&self, mut st: MutexGuard<'_, SlotState>) {
        if st.dropped {
            return;
        }
        st.dropped = true;
        drop(st);
        if let Some(d) = self.drop_fn {
            let _scope = CallbackScope::enter(self.node_id);
            // SAFETY: `d` and `context` came together from C, and this runs once.
            unsafe { d(self.context) };
        }
    }
}

struct InFlight<'a, F: Copy>(&'a Slot<F>);

impl<F: Copy> Drop for InFlight<'_, F> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.in_flight -= 1;
        let me = std::thread::current().id();
        if let Some(i) = st.callers.iter().position(|t| *t == me) {
            st.callers.swap_remove(i);
        }
        if st.in_flight == 0 {
            self.0.idle.notify_all();
            if st.closed {
                self.0.run_drop(st);
            }
        }
    }
}

impl<F: Copy> Drop for Slot<F> {
    fn drop(&mut self) {
        // A slot never closed (builder freed, start failed) still owes its `drop`; no call can
        // be in flight since nobody else holds it any more.
        let st = self.lock();
        self.run_drop(st);
    }
}

/// A slot of any callback type, for registries that only close them.
pub(crate) trait Closable: Send + Sync {
    /// See [`Slot::close`].
    fn close(&self);
}

impl<F: Copy> Closable for Slot<F> {
    fn close(&self) {
        Slot::close(self)
    }
}

/// Checks a triple's `call` and turns it into a slot.
pub(crate) fn take<F: Copy>(
    context: *mut c_void,
    call: Option<F>,
    drop_fn: Option<DropFn>,
    node_id: u64,
) -> Result<Slot<F>, FfiError> {
    let call = call.ok_or_else(|| FfiError::null("callback.call"))?;
    Ok(Slot::new(context, call, drop_fn, node_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    static DROPS: AtomicUsize = AtomicUsize::new(0);
    unsafe extern "C" fn count_drop(_: *mut c_void) {
        DROPS.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn drop_runs_once_after_the_last_call() {
        let before = DROPS.load(Ordering::SeqCst);
        let slot = Arc::new(Slot::new(std::ptr::null_mut(), 1u8, Some(count_drop), 1));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let s = slot.clone();
        let t = std::thread::spawn(move || {
            s.invoke(|_, _| {
                started_tx.send(()).unwrap();
                go_rx.recv().unwrap();
            })
        });
        started_rx.recv().unwrap();
        let s = slot.clone();
        let closer = std::thread::spawn(move || s.close());
        // The close waits for the call in flight: drop has not run yet.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(DROPS.load(Ordering::SeqCst), before);
        go_tx.send(()).unwrap();
        assert!(t.join().unwrap());
        closer.join().unwrap();
        assert_eq!(DROPS.load(Ordering::SeqCst), before + 1);
        assert!(!slot.invoke(|_, _| panic!("must not run after close")));
        slot.close();
        drop(slot);
        assert_eq!(DROPS.load(Ordering::SeqCst), before + 1);
    }

    #[test]
    fn close_from_inside_a_call_defers_the_drop() {
        static LOCAL: AtomicUsize = AtomicUsize::new(0);
        unsafe extern "C" fn local_drop(_: *mut c_void) {
            LOCAL.fetch_add(1, Ordering::SeqCst);
        }
        let slot = Slot::new(std::ptr::null_mut(), 1u8, Some(local_drop), 2);
        slot.invoke(|_, _| {
            slot.close();
            assert_eq!(LOCAL.load(Ordering::SeqCst), 0);
        });
        assert_eq!(LOCAL.load(Ordering::SeqCst), 1);
        drop(slot);
        assert_eq!(LOCAL.load(Ordering::SeqCst), 1);
    }
}
