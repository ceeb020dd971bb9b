//! Each uid's share of the signing queue: how many fresh signatures it may
//! have queued or under way at once (`server.max_signing_per_uid`). A uid
//! asking for a new app name on every request then waits for its own
//! signatures instead of filling the queue, and the others' jobs find room.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::issue::Place;
use crate::sync::lock;

/// Past this many uids, those with nothing queued are forgotten.
const REMEMBERED_UIDS: usize = 1024;

/// The shares, one per uid that asked for a fresh signature.
#[derive(Debug)]
pub struct Shares {
    size: usize,
    per_uid: Mutex<HashMap<u32, Arc<Semaphore>>>,
}

impl Shares {
    pub fn new(size: usize) -> Shares {
        Shares {
            size,
            per_uid: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until `uid` has a free place in its share.
    pub async fn place(&self, uid: u32) -> Place {
        let share = {
            let mut per_uid = lock(&self.per_uid);
            if per_uid.len() >= REMEMBERED_UIDS && !per_uid.contains_key(&uid) {
                // A share nobody holds a place of has all its places free.
                per_uid.retain(|_, share| Arc::strong_count(share) > 1);
            }
            let share = per_uid
                .entry(uid)
                .or_insert_with(|| Arc::new(Semaphore::new(self.size)));
            Arc::clone(share)
        };
        share.acquire_owned().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_uid_waits_for_its_own_places_only() {
        let shares = Shares::new(2);
        let first = shares.place(1).await;
        let _second = shares.place(1).await;
        let third = shares.place(1);
        tokio::pin!(third);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), &mut third).await;
        assert!(waited.is_err(), "uid 1's third waits");
        let _other = shares.place(2).await;
        drop(first);
        assert!(third.await.is_some(), "a place given back is taken");
    }
}
