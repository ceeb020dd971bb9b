//! `[hsm] environment`: variables a module's client library reads (p11-kit's
//! `P11_KIT_SERVER_ADDRESS`, a vendor's configuration path), set in the
//! agent's own environment so that no wrapper script is needed.

use std::collections::BTreeMap;

/// Sets every variable of `variables`, replacing what the process was
/// started with. Call it while the process has one thread, before the
/// module is loaded: the environment is process-wide, and another thread
/// (or the module) reading it while it changes could see it torn. The names
/// and values were checked with the config.
pub fn apply(variables: &BTreeMap<String, String>) {
    for (name, value) in variables {
        std::env::set_var(name, value);
    }
}
