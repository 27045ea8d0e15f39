//! Market data in from Redis, for an API node running apart from the engine
//! (`stocksblitz serve --role api`): the engine node's published batches are decoded
//! into the same ring the API fan-out drains on an engine node, so REST and WebSocket
//! behave the same. On (re)connecting it asks the engine for a full snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use stocksblitz_engine::agent::{AgentError, ThreadHandle};
use stocksblitz_engine::ring::RingProducer;
use stocksblitz_engine::stats::EngineStats;
use stocksblitz_engine::{EngineEvent, UnixNanos};

use super::runtime::spawn_async;
use super::RedisStore;

/// Per-instrument sequence tracking: a jump means events were missed.
#[derive(Default)]
struct Gaps {
    last: Vec<u64>,
}

impl Gaps {
    fn saw(&mut self, e: &EngineEvent) -> bool {
        let i = e.instrument.index();
        if i >= self.last.len() {
            self.last.resize(i + 1, 0);
        }
        let Some(last) = self.last.get_mut(i) else { return false };
        let gap = *last != 0 && e.seq != *last + 1;
        *last = e.seq;
        gap
    }
}

pub fn spawn_subscriber(
    store: Arc<RedisStore>,
    mut ring: RingProducer<EngineEvent>,
    // This node's "engine": its heartbeat says market data is flowing in (health),
    // `events` counts what arrived; ring drops are the ring's own counters.
    source: Arc<EngineStats>,
    stop: Arc<AtomicBool>,
) -> Result<ThreadHandle, AgentError> {
    let flag = Arc::clone(&stop);
    // Blocks on the pub/sub connection (an async runtime of its own), not a ring.
    spawn_async("redis-subscriber", &flag, move || async move {
        while !stop.load(Ordering::Acquire) {
            let session = async {
                let mut pubsub = store.client().get_async_pubsub().await?;
                pubsub.subscribe(&store.setup.channel).await?;
                // Subscribed: now ask for the books we have not seen.
                let resync = format!("{}:resync", store.setup.channel);
                store
                    .query::<i64>(redis::cmd("PUBLISH").arg(&resync).arg("1").to_owned())
                    .await
                    .map_err(|e| redis::RedisError::from(std::io::Error::other(e.0)))?;
                let mut messages = pubsub.on_message();
                let mut gaps = Gaps::default();
                let mut last_resync = std::time::Instant::now();
                loop {
                    if stop.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    // Subscribed and listening: alive, even when the market is quiet.
                    source.heartbeat_ns.set(UnixNanos::now().0 as u64);
                    let msg = tokio::select! {
                        m = messages.next() => m,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    };
                    let Some(msg) = msg else { break };
                    match postcard::from_bytes::<Vec<EngineEvent>>(msg.get_payload_bytes()) {
                        Ok(events) => {
                            source.ticks.add(events.len() as u64);
                            let mut gap = false;
                            for e in events {
                                gap |= gaps.saw(&e);
                                if ring.push(e) {
                                    source.events.inc();
                                }
                            }
                            ring.wake_consumer();
                            // Missed events (a drop anywhere on the way): ask for the books
                            // again, at most once a second.
                            if gap && last_resync.elapsed() >= Duration::from_secs(1) {
                                last_resync = std::time::Instant::now();
                                let cmd = redis::cmd("PUBLISH").arg(&resync).arg("1").to_owned();
                                let _ = store.query::<i64>(cmd).await;
                            }
                        }
                        Err(e) => {
                            store.stats.decode_errors.inc();
                            tracing::warn!(error = %e, "redis subscriber: undecodable market data batch");
                        }
                    }
                }
                Ok::<(), redis::RedisError>(())
            };
            if let Err(e) = session.await {
                tracing::warn!(error = %e, "redis subscriber: connection lost; reconnecting");
            }
            if stop.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}
