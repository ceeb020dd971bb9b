//! The HSM going away and coming back, in every form the agent meets it:
//! under a served agent, under load, under the signing back in process, and
//! an HSM that stops answering, and one that drops its sessions (through
//! the slow module).
//! One target, so that what the agent promises when its HSM disappears is
//! read in one place.

mod dropped;
mod hangs;
mod in_process;
mod p11_kit;
mod served;
mod under_load;
