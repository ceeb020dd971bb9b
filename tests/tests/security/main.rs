//! The agent against clients that try to pass for another process or to
//! crowd the others out: real agent, real SoftHSM, clients that are real
//! processes of other users.

mod audit;
mod connections;
mod exe;
mod files;
mod fresh;
mod full_disk;
mod labels;
mod peer;
mod pids;
mod rates;
mod reload;
mod signals;
mod units;
