//! Scripted faults the simulator injects into what it sends, so tests and operators
//! can watch a handler recover: dropped, duplicated, reordered and malformed messages,
//! an abrupt disconnect, a silent period (heartbeats only where the venue has them),
//! slow delivery, connections that fall behind newer ones, and a venue's announced
//! shutdown.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Skip the next `count` book messages (a sequence gap).
    Drop,
    /// Send the next `count` book messages twice.
    Duplicate,
    /// Swap the next book message with the one after it.
    Reorder,
    /// Send `count` frames that are not valid messages.
    Malformed,
    /// Close every connection abruptly.
    Disconnect,
    /// Send no market data for `ms` milliseconds (heartbeats still flow).
    Silence,
    /// Delay each frame by `ms` milliseconds for the next `count` frames.
    Slow,
    /// Every connection open now delivers its market data `ms` milliseconds late from
    /// here on (a slower path); connections opened later do not, so a client's
    /// make-before-break replacement gets ahead of the connection it replaces.
    Lag,
    /// Announce shutdown (Binance `serverShutdown`, Kite/Coinbase a close), then close
    /// after `ms` milliseconds: the 24-hour-style forced close.
    Shutdown,
}

/// A fault request, as posted to `/control/faults`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    pub kind: FaultKind,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub ms: u64,
}

fn one() -> u32 {
    1
}

/// Pending faults for one venue; sessions consume them as they send.
#[derive(Debug, Default)]
pub struct Faults {
    pub drop: AtomicU32,
    pub duplicate: AtomicU32,
    pub reorder: AtomicU32,
    pub malformed: AtomicU32,
    /// Incremented per disconnect request; sessions compare with the value they saw.
    pub disconnect_epoch: AtomicU64,
    /// Wall-clock ms until which market data is withheld.
    pub silence_until_ms: AtomicU64,
    pub slow_frames: AtomicU32,
    /// Incremented per lag request; sessions compare with the value they saw.
    pub lag_epoch: AtomicU64,
    pub lag_ms: AtomicU64,
    pub slow_ms: AtomicU64,
    pub shutdown_epoch: AtomicU64,
    pub shutdown_after_ms: AtomicU64,
}

pub fn now_ms() -> u64 {
    (stocksblitz_engine::UnixNanos::now().0 / 1_000_000).max(0) as u64
}

/// Takes one unit of a counter if any is pending.
pub fn take(c: &AtomicU32) -> bool {
    c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
        .is_ok()
}

impl Faults {
    pub fn request(&self, r: FaultRequest) {
        match r.kind {
            FaultKind::Drop => self.drop.fetch_add(r.count, Ordering::Relaxed),
            FaultKind::Duplicate => self.duplicate.fetch_add(r.count, Ordering::Relaxed),
            FaultKind::Reorder => self.reorder.fetch_add(r.count, Ordering::Relaxed),
            FaultKind::Malformed => self.malformed.fetch_add(r.count, Ordering::Relaxed),
            FaultKind::Disconnect => {
                self.disconnect_epoch.fetch_add(1, Ordering::Relaxed);
                0
            }
            FaultKind::Silence => {
                self.silence_until_ms.store(now_ms() + r.ms, Ordering::Relaxed);
                0
            }
            FaultKind::Slow => {
                self.slow_ms.store(r.ms, Ordering::Relaxed);
                self.slow_frames.fetch_add(r.count, Ordering::Relaxed)
            }
            FaultKind::Lag => {
                self.lag_ms.store(r.ms, Ordering::Relaxed);
                self.lag_epoch.fetch_add(1, Ordering::Relaxed);
                0
            }
            FaultKind::Shutdown => {
                self.shutdown_after_ms.store(r.ms, Ordering::Relaxed);
                self.shutdown_epoch.fetch_add(1, Ordering::Relaxed);
                0
            }
        };
    }

    pub fn silenced(&self) -> bool {
        now_ms() < self.silence_until_ms.load(Ordering::Relaxed)
    }
}

/// What a session must do about connection-level faults before sending more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Carry on.
    Serve,
    /// A shutdown was just requested: announce it if the venue does (Binance).
    Announce,
    /// The announced shutdown is due: close the socket properly.
    Close,
    /// A disconnect was requested: drop the socket without a close frame.
    Abort,
}

/// Per-session view of disconnect/shutdown/lag requests made after the session
/// started.
#[derive(Debug, Clone, Copy)]
pub struct SessionFaults {
    disconnect_seen: u64,
    shutdown_seen: u64,
    close_at: Option<u64>,
    lag_seen: u64,
    latency: std::time::Duration,
}

impl SessionFaults {
    pub fn new(f: &Faults) -> Self {
        Self {
            disconnect_seen: f.disconnect_epoch.load(Ordering::Relaxed),
            shutdown_seen: f.shutdown_epoch.load(Ordering::Relaxed),
            close_at: None,
            lag_seen: f.lag_epoch.load(Ordering::Relaxed),
            latency: std::time::Duration::ZERO,
        }
    }

    /// How late this session delivers market data: set by the latest `lag` request
    /// made while it was open.
    pub fn latency(&mut self, f: &Faults) -> std::time::Duration {
        let epoch = f.lag_epoch.load(Ordering::Relaxed);
        if epoch != self.lag_seen {
            self.lag_seen = epoch;
            self.latency = std::time::Duration::from_millis(f.lag_ms.load(Ordering::Relaxed));
        }
        self.latency
    }

    pub fn check(&mut self, f: &Faults) -> Lifecycle {
        if f.disconnect_epoch.load(Ordering::Relaxed) != self.disconnect_seen {
            return Lifecycle::Abort;
        }
        match self.close_at {
            None if f.shutdown_epoch.load(Ordering::Relaxed) != self.shutdown_seen => {
                self.close_at = Some(now_ms() + f.shutdown_after_ms.load(Ordering::Relaxed));
                Lifecycle::Announce
            }
            Some(t) if now_ms() >= t => Lifecycle::Close,
            _ => Lifecycle::Serve,
        }
    }
}
