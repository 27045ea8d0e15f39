//! Test-only helpers shared by the integration tests of engine, feed-handlers and api
//! and by the benches (a dev-dependency of each, never a normal dependency; `tidy`
//! checks that): one counting allocator instead of a copy per crate, the one lock
//! for changing the environment of a test process, and the instrument builders the
//! tests' and benches' registries are made of.
//!
//! It is a crate (not a module per test binary) because the allocator and the
//! builders are needed by three crates' tests and the benches alike. It depends on the
//! engine, whose tests use it as a dev-dependency: cargo allows that cycle, and the
//! integration tests link the same engine library the testkit does.

// The only unsafe code in the workspace: `GlobalAlloc` is an unsafe trait.
#[allow(unsafe_code)]
pub mod alloc;
pub mod env;
pub mod instruments;
