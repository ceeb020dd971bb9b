//! Kryoptic's PKCS#11 module, built once from the crate's source in
//! cargo's registry: `tests/kryoptic/` is a tiny crate whose only
//! dependency is `kryoptic` (pinned there, with `Cargo.lock`), and cargo
//! builds that dependency's cdylib. The result is kept as
//! `target/kryoptic/libkryoptic_pkcs11-<version>.so`, so later runs (and
//! other test processes) use it without building again.
//!
//! Building needs `libclang-dev` (bindgen) and `libsqlite3-dev`, which
//! `hsm-config/install-deps.sh` installs, and takes about a minute.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::process::OutputExt;

/// The built module; the first call builds it.
pub fn module() -> &'static Path {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE.get_or_init(build)
}

/// The pinned version, from `tests/kryoptic/Cargo.toml`.
pub fn version() -> String {
    let manifest = std::fs::read_to_string(crate_dir().join("Cargo.toml"))
        .expect("read tests/kryoptic/Cargo.toml");
    let pinned = manifest
        .split("kryoptic = { version = \"=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("tests/kryoptic/Cargo.toml pins kryoptic with version = \"=X.Y.Z\"");
    pinned.to_owned()
}

fn crate_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kryoptic")
}

/// `target/`, found from the running test (`target/<profile>/deps/…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    exe.ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn build() -> PathBuf {
    let dir = target_dir().join("kryoptic");
    let module = dir.join(format!("libkryoptic_pkcs11-{}.so", version()));
    if module.is_file() {
        return module;
    }
    std::fs::create_dir_all(&dir).expect("create target/kryoptic");
    // Test processes may start at once (cargo nextest): one builds, the
    // others wait for it.
    let lock = File::create(dir.join(".build.lock")).expect("create the build lock");
    // SAFETY: flock(2) on a descriptor this function owns.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "lock target/kryoptic/.build.lock");
    if module.is_file() {
        return module;
    }
    eprintln!(
        "building Kryoptic {} into {} (once, about a minute)",
        version(),
        dir.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--manifest-path"])
        .arg(crate_dir().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building Kryoptic failed (it needs libclang-dev and libsqlite3-dev: hsm-config/install-deps.sh installs them):\n{}",
        out.stderr_text()
    );
    let built = std::fs::read_dir(dir.join("release/deps"))
        .expect("read target/kryoptic/release/deps")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("libkryoptic_pkcs11-") && name.ends_with(".so")
        })
        .max_by_key(|path| path.metadata().and_then(|m| m.modified()).ok())
        .expect("cargo built libkryoptic_pkcs11-*.so");
    let partial = module.with_extension("so.partial");
    std::fs::copy(&built, &partial).expect("copy the module");
    std::fs::rename(&partial, &module).expect("put the module in place");
    module
}
