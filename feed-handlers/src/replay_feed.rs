//! A feed that replays a capture file into the engine (`kind = "replay"`), through the
//! same normalizer a live feed of that venue uses, at the recorded pace, scaled, or as
//! fast as possible, optionally in a loop. Receive times are re-stamped to now so the
//! engine's staleness checks behave as they would live.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Deserialize;
use stocksblitz_engine::tick_ring::TickProducer;
use stocksblitz_engine::{InstrumentRegistry, UnixNanos};

use crate::capture;
use crate::replay::{replay, ReplayOptions, Speed, Stamp};
use crate::runner::FeedHandle;
use crate::stats::{FeedState, FeedStats};
use crate::venue::{Venue, VenueNormalizer};

/// `[feeds.replay]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayFeedConfig {
    /// Capture file (`<recv_ts_ns> t|b <frame>` per line).
    pub path: PathBuf,
    /// The protocol the capture was recorded from.
    pub venue: Venue,
    /// "original", "max", or a factor such as "2x".
    pub speed: String,
    /// Start over at the end of the file.
    #[serde(default)]
    pub repeat: bool,
}

impl ReplayFeedConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.speed.parse::<Speed>().map_err(|e| ("speed", e))?;
        if !self.path.is_file() {
            return Err(("path", format!("{} is not a readable file", self.path.display())));
        }
        Ok(())
    }
}

/// Starts a replay feed thread; the capture is read and checked before it starts.
pub fn spawn_replay(
    name: String,
    core: Option<usize>,
    cfg: &ReplayFeedConfig,
    registry: &InstrumentRegistry,
    symbols: &[String],
    mut ring: TickProducer,
    stop: Arc<AtomicBool>,
) -> Result<FeedHandle, String> {
    let speed: Speed = cfg.speed.parse()?;
    let records = capture::read(&cfg.path).map_err(|e| e.to_string())?;
    let mut normalizer = VenueNormalizer::build(cfg.venue, registry, symbols).map_err(|e| e.to_string())?;
    let repeat = cfg.repeat;
    let stats = Arc::new(FeedStats::default());
    let ring_stats = Arc::clone(ring.stats());
    let st = Arc::clone(&stats);
    let log_name = name.clone();
    let stop_flag = Arc::clone(&stop);
    let join = stocksblitz_engine::agent::spawn_thread(format!("feed-{name}"), core, move || {
            st.running.set(1);
            st.set_state(FeedState::Connected, None, UnixNanos::now());
            let opts = ReplayOptions {
                speed,
                stamp: Stamp::Now,
                stop: Some(&stop),
            };
            loop {
                let summary = replay(
                    &records,
                    &mut normalizer,
                    opts,
                    &st,
                    |t| {
                        ring.push(t);
                        ring.wake_consumer();
                    },
                    |i, e| tracing::debug!(feed = %log_name, frame = i + 1, error = %e, "bad frame in capture"),
                );
                tracing::info!(feed = %log_name, frames = summary.frames, ticks = summary.ticks, errors = summary.errors, "replay pass done");
                if !repeat || stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            // A finished replay is not a failed feed: keep reporting it as up until stopped.
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            st.running.set(0);
            st.set_state(FeedState::Stopped, None, UnixNanos::now());
        })
        .map_err(|e| e.to_string())?
        .with_stop(&stop_flag);
    Ok(FeedHandle::new(name, "replay", stats, ring_stats, join))
}
