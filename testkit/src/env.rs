//! Changing the environment of a test process that runs many tests at once.
//!
//! `std::env::set_var` is safe only while no other thread reads the environment outside
//! Rust's own lock (C code calling `getenv`); it is `unsafe` from edition 2024 on. The
//! workspace is on edition 2021, where it is a safe function. Tests sharing one binary
//! therefore change variables only through this module, which serializes every change
//! under one process-wide lock, and each test uses names unique to itself (so no test
//! reads a value another is changing). Rust's readers (`std::env::var`, which the code
//! under test uses) take std's lock and see a whole value or none.

use std::ffi::OsStr;
use std::sync::{Mutex, MutexGuard};

static ENV: Mutex<()> = Mutex::new(());

/// Holds the process-wide environment lock: no variable changes through this module
/// until the guard is dropped. A poisoned lock (a test panicked while holding it) is
/// still a lock.
pub fn lock() -> MutexGuard<'static, ()> {
    ENV.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sets `key` to `value` under the lock.
pub fn set(key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) {
    let _guard = lock();
    std::env::set_var(key, value);
}

/// Removes `key` under the lock.
pub fn remove(key: impl AsRef<OsStr>) {
    let _guard = lock();
    std::env::remove_var(key);
}

#[cfg(test)]
mod tests {
    #[test]
    fn set_and_remove_are_seen() {
        let key = format!("SBZ_TESTKIT_ENV_{}", std::process::id());
        super::set(&key, "v");
        assert_eq!(std::env::var(&key).as_deref(), Ok("v"));
        super::remove(&key);
        assert!(std::env::var(&key).is_err());
    }
}
