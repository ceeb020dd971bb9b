//! The PKCS#11 implementations the tests run against, each with its own
//! module, its own way of finding its token, and its own store on disk:
//! SoftHSM 2 (Debian's package; a directory of object files) and Kryoptic
//! (built from crates.io, [`crate::kryoptic`]; one SQLite file).
//!
//! A test that touches the token is written once and run on every store
//! with [`on_every_store!`](crate::on_every_store): each run is a test of its own, named for its
//! store (`keys::import::altinn_file::kryoptic`), and every [`TestToken`]
//! made on that test's thread is of that store.
//!
//! [`TestToken`]: crate::TestToken

use std::cell::Cell;
use std::path::Path;
use std::process::Command;

use crate::process::OutputExt;
use crate::{path_str, PIN, SO_PIN};

/// The SoftHSM2 PKCS#11 module (Debian package `softhsm2`).
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// One PKCS#11 implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// SoftHSM 2.6: one file per object, `token.object` for the token.
    SoftHsm,
    /// Kryoptic: the whole token in one SQLite database.
    Kryoptic,
}

thread_local! {
    static CURRENT: Cell<Store> = const { Cell::new(Store::SoftHsm) };
}

impl Store {
    /// Every store, in the order their runs are named.
    pub const ALL: [Store; 2] = [Store::SoftHsm, Store::Kryoptic];

    /// The store new tokens on this thread are made on: SoftHSM unless the
    /// test runs under [`Store::run`].
    pub fn current() -> Store {
        CURRENT.with(Cell::get)
    }

    /// Runs `test` with this store as the thread's [`Store::current`].
    pub fn run(self, test: impl FnOnce()) {
        let before = CURRENT.with(|current| current.replace(self));
        test();
        CURRENT.with(|current| current.set(before));
    }

    /// The module's path (building Kryoptic's the first time).
    pub fn module(self) -> String {
        match self {
            Store::SoftHsm => MODULE.to_owned(),
            Store::Kryoptic => path_str(crate::kryoptic::module()),
        }
    }

    /// The variable that points this store's module at the token in `dir`.
    pub fn environment(self, dir: &Path) -> (String, String) {
        match self {
            Store::SoftHsm => ("SOFTHSM2_CONF".into(), path_str(&dir.join("softhsm2.conf"))),
            // KRYOPTIC_CONF may name the database itself.
            Store::Kryoptic => ("KRYOPTIC_CONF".into(), path_str(&dir.join("token.sql"))),
        }
    }

    /// Creates a token labelled `label` in `dir`, with [`SO_PIN`] and
    /// [`PIN`], the way an operator does with the store's own tools.
    pub fn initialise(self, dir: &Path, label: &str) {
        let (name, value) = self.environment(dir);
        let run = |command: &mut Command, what: &str| {
            let out = command.env(&name, &value).output().unwrap_or_else(|e| {
                panic!("run {what} (hsm-config/install-deps.sh installs it): {e}")
            });
            out.success();
        };
        match self {
            Store::SoftHsm => {
                std::fs::create_dir(dir.join("tokens")).expect("create the token directory");
                std::fs::write(
                    &value,
                    format!(
                        "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                        dir.join("tokens").display()
                    ),
                )
                .expect("write softhsm2.conf");
                run(
                    Command::new("softhsm2-util")
                        .args(["--init-token", "--free", "--label", label])
                        .args(["--so-pin", SO_PIN, "--pin", PIN]),
                    "softhsm2-util",
                );
            }
            Store::Kryoptic => {
                let module = self.module();
                let tool = || {
                    let mut command = Command::new("pkcs11-tool");
                    command.args(["--module", &module]);
                    command
                };
                run(
                    tool().args(["--init-token", "--label", label, "--so-pin", SO_PIN]),
                    "pkcs11-tool",
                );
                run(
                    tool()
                        .args(["--token-label", label, "--init-pin", "--login"])
                        .args(["--login-type", "so", "--so-pin", SO_PIN, "--pin", PIN]),
                    "pkcs11-tool",
                );
            }
        }
    }

    /// The lower-case name a test run carries.
    pub fn name(self) -> &'static str {
        match self {
            Store::SoftHsm => "softhsm",
            Store::Kryoptic => "kryoptic",
        }
    }
}

/// Writes each test once and runs it on every [`Store`]: `fn name() { … }`
/// becomes a module `name` with the tests `softhsm` and `kryoptic`, so the
/// output names the store (`name::kryoptic ... ok`). Doc comments are kept.
#[macro_export]
macro_rules! on_every_store {
    ($(#[doc = $doc:expr])* fn $name:ident() $body:block $($rest:tt)*) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body() $body

            #[test]
            fn softhsm() {
                $crate::Store::SoftHsm.run(body);
            }

            #[test]
            fn kryoptic() {
                $crate::Store::Kryoptic.run(body);
            }
        }
        $crate::on_every_store! { $($rest)* }
    };
    () => {};
}
