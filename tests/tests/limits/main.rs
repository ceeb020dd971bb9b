//! Limits: one user cannot crowd out the others, and the agent holds under
//! load. A real agent and real SoftHSM (or the slow module in front of it),
//! clients that are real processes, some of other users.
//!
//! | module | what it asserts |
//! |---|---|
//! | [`connections`] | one uid cannot hold every connection: past `max_connections_per_uid` it gets 503 and another user is still served |
//! | [`rates`] | past its burst, a uid's cache misses and refusals are spaced at its rate and then answered; another uid keeps its own burst |
//! | [`share`] | one uid asking for a new app name on every request waits for places to sign and leaves the others their turn |
//! | [`load`] | 1,000 clients beside 500 slow and 100 idle ones, over the connection cap: every token arrives, the excess gets 503 with Retry-After, slow and idle connections close on their deadlines, no descriptor is left over |
//! | [`sessions`] | signatures that wait on the HSM get more sessions than `threads`, within the token's limit, kept while the load lasts and closed after |
//! | [`signer`] | the signing back in process: the pool under concurrent load, the cache's single flight, the bounded queue; also reloads and the start-up self-test |
//!
//! [`signer`] also asserts what a reload and the self-test do with keys,
//! which is `lifecycle`'s matter; it is here because it drives the pool and
//! the queue in process.

mod connections;
mod load;
mod rates;
mod sessions;
mod share;
mod signer;
