//! Small synchronisation helpers shared by the hub and the shutdown switch.

use slab::Slab;
use std::{
    sync::{Mutex, MutexGuard},
    task::Waker,
};

/// Locks `mutex`, ignoring poisoning: no critical section here spans user code or a multi-step
/// invariant, so the data is consistent even after a panic elsewhere, and one panic must not
/// spread to every connection.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes the wakers of everyone waiting, to wake once the lock is released.
pub(crate) fn take_wakers(waiters: &mut Slab<Option<Waker>>) -> Vec<Waker> {
    waiters
        .iter_mut()
        .filter_map(|(_, waker)| waker.take())
        .collect()
}
