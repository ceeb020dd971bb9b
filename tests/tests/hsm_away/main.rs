//! The HSM going away and coming back, in every form the agent meets it:
//! under a served agent, under load, and under the signing back in process.
//! One target, so that what the agent promises when its HSM disappears is
//! read in one place.

mod in_process;
mod p11_kit;
mod served;
mod under_load;
