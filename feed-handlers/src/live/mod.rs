//! Live venue connections: one pinned thread per feed running a single-threaded tokio
//! runtime that owns the WebSocket, normalizes every frame on arrival and pushes the
//! ticks into the feed's ring.
//!
//! The loop: connect (with a timeout), tell the normalizer (every instrument SYNCING,
//! books wait for snapshots), subscribe, then read. Frames are normalized in place;
//! snapshot requests are fetched over REST concurrently and fed back in as frames. A
//! silent connection is reported STALE after `stale_after_ms` and replaced after
//! `dead_after_ms`; a failed connection is retried with capped, jittered exponential
//! backoff. A venue's announced shutdown, or the connection reaching its maximum age,
//! triggers make-before-break: a new connection is opened and verified (its first data
//! frame arrives) before the old one is dropped, so no data is lost in between.

mod connection;

pub use connection::{spawn_live, LiveConfig, SIMULATOR_PLACEHOLDER};
