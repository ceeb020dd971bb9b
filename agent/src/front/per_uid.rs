//! Connections open per uid, so that one user's processes cannot hold every
//! place under `server.max_connections` (idle keep-alives cost them nothing).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::sync::lock;

/// How many connections each uid has open, capped.
#[derive(Debug)]
pub struct PerUid {
    max: usize,
    open: Mutex<HashMap<u32, usize>>,
}

/// One connection's place under its uid's cap, given back when dropped.
#[derive(Debug)]
pub struct UidSlot {
    counts: Arc<PerUid>,
    uid: u32,
}

impl PerUid {
    pub fn new(max: usize) -> Arc<PerUid> {
        Arc::new(PerUid {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for one more connection of `uid`; none once it has `max`.
    pub fn try_acquire(self: &Arc<Self>, uid: u32) -> Option<UidSlot> {
        let mut open = lock(&self.open);
        let count = open.entry(uid).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(UidSlot {
            counts: Arc::clone(self),
            uid,
        })
    }

    /// Connections `uid` has open now.
    #[cfg(test)]
    pub fn open(&self, uid: u32) -> usize {
        lock(&self.open).get(&uid).copied().unwrap_or(0)
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.counts.open);
        if let Some(count) = open.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                // No entry stays behind for a uid that left.
                open.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_uid_has_its_own_cap_and_gets_places_back() {
        let counts = PerUid::new(2);
        let a1 = counts.try_acquire(1).unwrap();
        let _a2 = counts.try_acquire(1).unwrap();
        assert!(counts.try_acquire(1).is_none(), "uid 1 is at its cap");
        let _b = counts.try_acquire(2).expect("uid 2 is not affected");
        drop(a1);
        assert_eq!(counts.open(1), 1);
        let _a3 = counts.try_acquire(1).expect("a place given back");
        assert!(counts.try_acquire(1).is_none());
        drop(_a3);
        drop(_a2);
        assert_eq!(
            lock(&counts.open).get(&1),
            None,
            "no entry for a uid that left"
        );
    }
}
