//! Everything that limits a uid, in one place: the connections it may hold,
//! its rate of cache misses and of refused requests, and its share of the
//! signatures in flight. One map holds each uid's counts.
//!
//! - **Connections**: at most `server.max_connections` in all and
//!   `server.max_connections_per_uid` per uid; past either, 503.
//! - **Rates** (`server.cache_misses_per_uid`, `server.refusals_per_uid`):
//!   past its burst, a uid's further misses and refusals are spaced at the
//!   steady rate; the request waits its turn and is then answered. The rule
//!   is GCRA: each request moves the uid's "theoretical arrival time" one
//!   interval on, and may go once that time is no more than the burst ahead
//!   of now.
//! - **Signatures in flight**: at most as many as the back takes at once
//!   ([`TokenSource::signing_places`](crate::issue::TokenSource::signing_places));
//!   further requests wait here, not in the back's queue. A uid below its
//!   share (`server.max_signing_per_uid`) takes a free place at once; one
//!   at or above it only when no other uid that waits has fewer in flight.
//!   A uid alone may so use every session, and uids that wait together end
//!   up with as many each: one asking for new app names on every request
//!   cannot crowd out the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{PerUidRate, ServerConfig};
use crate::sync::lock;

/// Past this many uids, those holding nothing and back to their full
/// bursts are forgotten.
const REMEMBERED_UIDS: usize = 1024;

/// The limits of `[server]`, and every uid's standing under them.
#[derive(Debug)]
pub struct Limits {
    max_connections: usize,
    max_connections_per_uid: usize,
    share: usize,
    misses: Rate,
    refusals: Rate,
    state: Mutex<State>,
    /// Woken when a connection closes or a signature ends.
    released: Notify,
}

#[derive(Debug, Default)]
struct State {
    connections: usize,
    signing: usize,
    uids: HashMap<u32, Uid>,
}

impl State {
    /// Whether `uid` may start a signature with `places` in all.
    fn may_sign(&self, uid: u32, places: usize, share: usize) -> bool {
        if self.signing >= places {
            return false;
        }
        let mine = self.uids.get(&uid).map_or(0, |mine| mine.signing);
        mine < share
            || !self
                .uids
                .iter()
                .any(|(other, them)| *other != uid && them.waiting > 0 && them.signing < mine)
    }
}

/// One uid's standing.
#[derive(Debug, Clone, Copy)]
struct Uid {
    connections: usize,
    signing: usize,
    /// Requests waiting for a place to sign.
    waiting: usize,
    /// The next theoretical arrival of a cache miss, and of a refusal.
    next_miss: Instant,
    next_refusal: Instant,
}

impl Uid {
    fn new(now: Instant) -> Uid {
        Uid {
            connections: 0,
            signing: 0,
            waiting: 0,
            next_miss: now,
            next_refusal: now,
        }
    }

    /// Holds nothing, and both bursts are whole again: as if never seen.
    fn forgettable(&self, now: Instant) -> bool {
        self.connections == 0
            && self.signing == 0
            && self.waiting == 0
            && self.next_miss <= now
            && self.next_refusal <= now
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `server.max_connections` are open.
    All(usize),
    /// The uid holds `server.max_connections_per_uid`.
    Uid(u32, usize),
}

/// What a uid holds (a connection, a signature in flight), given back
/// when dropped.
#[derive(Debug)]
pub struct Held {
    limits: Arc<Limits>,
    uid: u32,
    what: Hold,
}

#[derive(Debug, Clone, Copy)]
enum Hold {
    Connection,
    Signature,
}

impl Limits {
    pub fn new(config: &ServerConfig) -> Arc<Limits> {
        Arc::new(Limits {
            max_connections: config.max_connections,
            max_connections_per_uid: config.max_connections_per_uid.min(config.max_connections),
            share: config.max_signing_per_uid,
            misses: Rate::new(&config.cache_misses_per_uid),
            refusals: Rate::new(&config.refusals_per_uid),
            state: Mutex::new(State::default()),
            released: Notify::new(),
        })
    }

    /// A place for one more connection of `uid`, or which cap is full.
    pub fn connect(self: &Arc<Self>, uid: u32) -> Result<Held, Full> {
        let mut state = lock(&self.state);
        if state.connections >= self.max_connections {
            return Err(Full::All(self.max_connections));
        }
        let max_per_uid = self.max_connections_per_uid;
        let mine = state.uid(uid, Instant::now());
        if mine.connections >= max_per_uid {
            return Err(Full::Uid(uid, max_per_uid));
        }
        mine.connections += 1;
        state.connections += 1;
        Ok(self.held(uid, Hold::Connection))
    }

    /// Waits for `uid`'s turn under `server.cache_misses_per_uid`; whether
    /// it had to wait.
    pub async fn miss_turn(&self, uid: u32) -> bool {
        self.turn(uid, |mine| &mut mine.next_miss, &self.misses)
            .await
    }

    /// Waits for `uid`'s turn under `server.refusals_per_uid`; whether it
    /// had to wait.
    pub async fn refusal_turn(&self, uid: u32) -> bool {
        self.turn(uid, |mine| &mut mine.next_refusal, &self.refusals)
            .await
    }

    /// A place for a signature of `uid` if it may start one now, with
    /// `places` in all (see the module's rule).
    pub fn try_signature(self: &Arc<Self>, uid: u32, places: usize) -> Option<Held> {
        self.try_sign(uid, places)
            .then(|| self.held(uid, Hold::Signature))
    }

    /// Waits until `uid` may start a signature ([`Limits::try_signature`]).
    pub async fn signature(self: &Arc<Self>, uid: u32, places: usize) -> Held {
        let _waiting = Waiting::new(self, uid);
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.try_sign(uid, places) {
                return self.held(uid, Hold::Signature);
            }
            released.await;
        }
    }

    /// Resolves once every connection has closed.
    pub async fn all_closed(&self) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if lock(&self.state).connections == 0 {
                return;
            }
            released.await;
        }
    }

    fn try_sign(&self, uid: u32, places: usize) -> bool {
        let mut state = lock(&self.state);
        if !state.may_sign(uid, places, self.share) {
            return false;
        }
        state.uid(uid, Instant::now()).signing += 1;
        state.signing += 1;
        true
    }

    async fn turn(&self, uid: u32, next: fn(&mut Uid) -> &mut Instant, rate: &Rate) -> bool {
        let now = Instant::now();
        let at = {
            let mut state = lock(&self.state);
            rate.take(next(state.uid(uid, now)), now)
        };
        if at == now {
            return false;
        }
        tokio::time::sleep_until(at).await;
        true
    }

    fn held(self: &Arc<Self>, uid: u32, what: Hold) -> Held {
        Held {
            limits: Arc::clone(self),
            uid,
            what,
        }
    }

    fn release(&self, uid: u32, what: Hold) {
        {
            let mut state = lock(&self.state);
            match what {
                Hold::Connection => state.connections -= 1,
                Hold::Signature => state.signing -= 1,
            }
            if let Some(mine) = state.uids.get_mut(&uid) {
                match what {
                    Hold::Connection => mine.connections -= 1,
                    Hold::Signature => mine.signing -= 1,
                }
            }
        }
        self.released.notify_waiters();
    }
}

impl State {
    /// `uid`'s standing, made when first seen; uids that can be forgotten
    /// are, once [`REMEMBERED_UIDS`] are known.
    fn uid(&mut self, uid: u32, now: Instant) -> &mut Uid {
        if self.uids.len() >= REMEMBERED_UIDS && !self.uids.contains_key(&uid) {
            self.uids.retain(|_, known| !known.forgettable(now));
        }
        self.uids.entry(uid).or_insert_with(|| Uid::new(now))
    }
}

/// A request waiting for a place to sign, counted while it waits (and no
/// longer should it be dropped, its client gone).
struct Waiting<'a> {
    limits: &'a Limits,
    uid: u32,
}

impl Waiting<'_> {
    fn new(limits: &Limits, uid: u32) -> Waiting<'_> {
        lock(&limits.state).uid(uid, Instant::now()).waiting += 1;
        Waiting { limits, uid }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mine) = lock(&self.limits.state).uids.get_mut(&self.uid) {
            mine.waiting -= 1;
        }
        // A uid above its share may have waited for this one alone.
        self.limits.released.notify_waiters();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.limits.release(self.uid, self.what);
    }
}

/// One rate: its interval, and how far ahead of now a uid's next arrival
/// may run (its burst).
#[derive(Debug)]
struct Rate {
    interval: Duration,
    tolerance: Duration,
}

impl Rate {
    fn new(rate: &PerUidRate) -> Rate {
        let interval = Duration::from_secs_f64(1.0 / rate.per_second);
        Rate {
            interval,
            tolerance: interval.saturating_mul(rate.burst.saturating_sub(1)),
        }
    }

    /// Books a request arriving `now` against `next`; the instant it may go.
    fn take(&self, next: &mut Instant, now: Instant) -> Instant {
        let start = (*next).max(now);
        *next = start + self.interval;
        start
            .checked_sub(self.tolerance)
            .map_or(now, |at| at.max(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(tune: impl FnOnce(&mut ServerConfig)) -> Arc<Limits> {
        let mut config = ServerConfig::default();
        tune(&mut config);
        Limits::new(&config)
    }

    fn rate(per_second: f64, burst: u32) -> Rate {
        Rate::new(&PerUidRate { per_second, burst })
    }

    #[test]
    fn a_burst_goes_at_once_then_the_rest_are_spaced() {
        let rate = rate(10.0, 3);
        let now = Instant::now();
        let mut next = now;
        for _ in 0..3 {
            assert_eq!(rate.take(&mut next, now), now);
        }
        assert_eq!(rate.take(&mut next, now), now + Duration::from_millis(100));
        assert_eq!(rate.take(&mut next, now), now + Duration::from_millis(200));
    }

    #[test]
    fn time_without_requests_gives_the_burst_back() {
        let rate = rate(10.0, 2);
        let now = Instant::now();
        let mut next = now;
        rate.take(&mut next, now);
        rate.take(&mut next, now);
        assert!(rate.take(&mut next, now) > now, "the burst is spent");
        let later = now + Duration::from_secs(1);
        assert_eq!(rate.take(&mut next, later), later);
        assert_eq!(rate.take(&mut next, later), later);
        assert!(rate.take(&mut next, later) > later);
    }

    #[test]
    fn each_uid_has_its_own_connection_cap_under_the_total() {
        let limits = limits(|c| {
            c.max_connections = 3;
            c.max_connections_per_uid = 2;
        });
        let a1 = limits.connect(1).unwrap();
        let _a2 = limits.connect(1).unwrap();
        assert_eq!(limits.connect(1).unwrap_err(), Full::Uid(1, 2));
        let _b = limits.connect(2).expect("uid 2 is not affected");
        assert_eq!(limits.connect(3).unwrap_err(), Full::All(3));
        drop(a1);
        let _a3 = limits.connect(1).expect("a place given back");
    }

    #[test]
    fn idle_uids_are_forgotten_but_not_their_spent_bursts() {
        let limits = limits(|c| {
            c.cache_misses_per_uid = PerUidRate {
                per_second: 1.0,
                burst: 1,
            }
        });
        let now = Instant::now();
        let held = limits.connect(0).unwrap();
        {
            let mut state = lock(&limits.state);
            let spent = state.uid(1, now);
            limits.misses.take(&mut spent.next_miss, now);
            for uid in 2..REMEMBERED_UIDS as u32 {
                state.uid(uid, now);
            }
            state.uid(u32::MAX, now);
            let kept: Vec<u32> = state.uids.keys().copied().collect();
            assert!(kept.contains(&0) && kept.contains(&1), "{kept:?}");
            assert_eq!(kept.len(), 3, "{kept:?}");
        }
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_over_the_rate_waits_for_its_turn() {
        let limits = limits(|c| {
            c.refusals_per_uid = PerUidRate {
                per_second: 2.0,
                burst: 1,
            }
        });
        let start = Instant::now();
        assert!(!limits.refusal_turn(7).await, "the first goes at once");
        assert!(limits.refusal_turn(7).await, "the second waits");
        assert!(Instant::now() - start >= Duration::from_millis(500));
        assert!(
            !limits.refusal_turn(8).await,
            "another uid has its own burst"
        );
    }

    #[test]
    fn a_uid_alone_may_take_every_place() {
        let limits = limits(|c| c.max_signing_per_uid = 2);
        let alone: Vec<Held> = (0..5).filter_map(|_| limits.try_signature(1, 5)).collect();
        assert_eq!(alone.len(), 5, "alone, no share binds");
        assert!(limits.try_signature(1, 5).is_none(), "every place taken");
        assert!(limits.try_signature(2, 5).is_none(), "for everyone");
    }

    #[tokio::test]
    async fn a_freed_place_goes_to_the_waiting_uid_with_fewer_in_flight() {
        let limits = limits(|c| c.max_signing_per_uid = 1);
        let mut mine: Vec<Held> = (0..3).filter_map(|_| limits.try_signature(1, 4)).collect();
        let _theirs = limits.try_signature(2, 4).unwrap();
        // Full: uid 2 (one in flight) and uid 1 (three) both wait.
        let next_of_2 = limits.signature(2, 4);
        let next_of_1 = limits.signature(1, 4);
        tokio::pin!(next_of_2, next_of_1);
        let later = Duration::from_millis(20);
        assert!(tokio::time::timeout(later, &mut next_of_2).await.is_err());
        assert!(tokio::time::timeout(later, &mut next_of_1).await.is_err());
        mine.pop();
        let _second_of_2 = next_of_2.await;
        assert!(
            tokio::time::timeout(later, &mut next_of_1).await.is_err(),
            "full again"
        );
        mine.pop();
        next_of_1.await;
    }

    #[test]
    fn below_its_share_a_uid_takes_a_place_whoever_waits() {
        let limits = limits(|c| c.max_signing_per_uid = 2);
        let _first = limits.try_signature(1, 8).unwrap();
        let waiting = Waiting::new(&limits, 2);
        let second = limits.try_signature(1, 8);
        assert!(second.is_some(), "below its share");
        let third = limits.try_signature(1, 8);
        assert!(third.is_none(), "at its share, uid 2 waits");
        drop(waiting);
        let third = limits.try_signature(1, 8);
        assert!(third.is_some(), "nobody waits");
    }
}
