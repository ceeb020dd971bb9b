//! The probe thread: asks the token whether it is still there
//! (`C_GetTokenInfo`) on behalf of the supervisor, which waits for the
//! answer only so long. A probe the HSM never answers leaves this one thread
//! waiting, never the supervisor, and no second probe is started meanwhile.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::answering::Answering;
use crate::hsm::{HsmError, TokenHandle};
use crate::sync::lock;

/// The probe thread of one connection; it stops when this is dropped.
pub struct Prober {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the thread (a probe asked for, or stop) and the waiters (an answer).
    changed: Condvar,
    answering: Arc<Answering>,
}

#[derive(Default)]
struct State {
    asked: u64,
    answered: u64,
    last: Option<Result<(), Arc<HsmError>>>,
    /// The thread is inside `C_GetTokenInfo`.
    calling: bool,
    stop: bool,
}

impl Prober {
    /// Starts the thread; its calls count in `answering`'s probes.
    pub fn start(token: TokenHandle, answering: Arc<Answering>) -> std::io::Result<Prober> {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            changed: Condvar::new(),
            answering,
        });
        let thread = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("hsm-probe".into())
            .spawn(move || thread.run(&token))?;
        Ok(Prober { shared })
    }

    /// Asks the token and waits up to `wait` for its answer: `None` when it
    /// has not answered yet (the question stays asked; a later call waits
    /// for the same answer instead of asking again).
    pub fn probe(&self, wait: Duration) -> Option<Result<(), Arc<HsmError>>> {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        if !state.calling && state.asked == state.answered {
            state.asked += 1;
            shared.changed.notify_all();
        }
        let asked = state.asked;
        let deadline = Instant::now() + wait;
        while state.answered < asked {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = shared
                .changed
                .wait_timeout(state, left)
                .map_or_else(|p| p.into_inner().0, |(state, _)| state);
        }
        state.last.clone()
    }

    /// Whether the thread is outside the module (it may be torn down).
    pub fn is_idle(&self) -> bool {
        !lock(&self.shared.state).calling
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.changed.notify_all();
    }
}

impl Shared {
    fn run(&self, token: &TokenHandle) {
        let mut state = lock(&self.state);
        loop {
            if state.stop {
                return;
            }
            if state.asked == state.answered {
                state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let asked = state.asked;
            state.calling = true;
            drop(state);
            let result = {
                let _in_flight = self.answering.probing.enter();
                token.probe()
            };
            state = lock(&self.state);
            state.calling = false;
            state.answered = asked;
            state.last = Some(result.map_err(Arc::new));
            self.changed.notify_all();
        }
    }
}
