//! HSM faults: the HSM going away and coming back, or not answering, in
//! every form the agent meets it. One target, so that what the agent
//! promises when its HSM disappears is read in one place.
//!
//! | module | what it asserts |
//! |---|---|
//! | [`served`] | a token moved away under a served agent gives 503 and readiness says why; tokens flow again when it is back; watchdog pings stop meanwhile |
//! | [`under_load`] | clients without retries get 503 `hsm-unavailable` while the HSM is away, tokens again after, never a wrong one, with RSA and P-256 |
//! | [`in_process`] | under the signing back in process: the token away and back, deleted and re-created, or back with a PIN the agent does not have (tried exactly once) |
//! | [`p11_kit`] | the `p11-kit server` the agent reaches the token through killed and started again, or stopped: 503 at once or at the deadline, then tokens |
//! | [`hangs`] | a signature (RSA and P-256) or the probe that hangs: 503 at the deadline, readiness and watchdog say so, threads stay, service resumes by itself |
//! | [`dropped`] | sessions the HSM drops (a network HSM's restart or idle timeout) cost no request, cache on and off, at 0 and 2 ms per signature |
//! | [`logged_out`] | a login the HSM forgets (CKR_USER_NOT_LOGGED_IN on every session) costs no request: the agent reconnects, the signature that met it is signed again and requests that arrive meanwhile wait, within their deadline |
//! | [`labels`] | a label two tokens carry is refused before any login, naming each token's slot |
//! | [`login_signals`] | every termination signal during a new login after a fault ends the agent gracefully, and the token keeps its key |

mod dropped;
mod hangs;
mod in_process;
mod labels;
mod logged_out;
mod login_signals;
mod p11_kit;
mod served;
mod under_load;
