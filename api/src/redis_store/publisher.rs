//! Market data out to Redis, from its tap ring off the API fan-out: every event on
//! the pub/sub channel (one message per ring batch, a postcard-encoded list of
//! `EngineEvent`s), and the latest quote per symbol in `quote:{SYM}` (JSON, with a TTL,
//! at most once per `quote_interval_ms`). API nodes that join ask for a full snapshot
//! on `{channel}:resync` (and again when they see a gap); the engine then resends
//! every book on the API output, which this tap copies.
//!
//! An engine node that owns only some instruments (`cluster.instruments`) publishes
//! only theirs: the other engines publish the rest, and API nodes must see one source
//! per instrument (an unfed instrument's empty book and status would contend with
//! the owner's on the shared channel).
//!
//! Pub/sub is fire and forget: while Redis is down, batches are counted as failed and
//! dropped, and subscribers see the sequence gaps (their instruments turn GAPPED until
//! the snapshot they then request). Nothing upstream waits: a full tap drops and
//! counts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use stocksblitz_engine::agent::{AgentError, ThreadHandle};
use stocksblitz_engine::idle::{Idler, Pause};
use stocksblitz_engine::publisher::OutputStats;
use stocksblitz_engine::ring::RingConsumer;
use stocksblitz_engine::{Decimal, EngineEvent, EventData, InstrumentId, InstrumentRegistry};

use super::runtime::spawn_async;
use super::RedisStore;
use crate::dto::{micros, Dec};

const BATCH: usize = 1024;

/// Per instrument, whether this node publishes it: `owned` (`cluster.instruments`),
/// or all when `None`.
pub fn published(registry: &InstrumentRegistry, owned: Option<&[InstrumentId]>) -> Vec<bool> {
    match owned {
        None => vec![true; registry.len()],
        Some(list) => (0..registry.len())
            .map(|i| list.iter().any(|o| o.index() == i))
            .collect(),
    }
}

/// Drops the events of instruments this node does not publish (whole instruments:
/// their per-instrument sequences stay gapless).
pub fn keep_published(events: &mut Vec<EngineEvent>, published: &[bool]) {
    events.retain(|e| published.get(e.instrument.index()).copied().unwrap_or(false));
}

/// Starts the publisher; `published` from [`published`].
pub fn spawn_publisher(
    store: Arc<RedisStore>,
    registry: Arc<InstrumentRegistry>,
    mut ring: RingConsumer<EngineEvent>,
    output: Arc<OutputStats>,
    published: Vec<bool>,
    stop: Arc<AtomicBool>,
) -> Result<ThreadHandle, AgentError> {
    let flag = Arc::clone(&stop);
    // An async loop on a runtime of its own (the Redis client is async), idling by
    // `[redis.idle]` between empty polls of its ring.
    spawn_async("redis-publisher", &flag, move || async move {
        let listener = tokio::spawn(listen_for_resync(Arc::clone(&store), output));
        let mut events = Vec::with_capacity(BATCH);
        let mut latest: Vec<Option<EngineEvent>> = vec![None; registry.len()];
        let mut next_quotes = Instant::now();
        let interval = Duration::from_millis(store.setup.quote_interval_ms);
        let mut payload = Vec::with_capacity(BATCH * 128);
        let mut idler = Idler::new(store.setup.idle);
        while !stop.load(Ordering::Acquire) {
            events.clear();
            let popped = ring.pop_batch(&mut events, BATCH);
            keep_published(&mut events, &published);
            for e in &events {
                if matches!(e.data, EventData::Quote { .. }) {
                    if let Some(slot) = latest.get_mut(e.instrument.index()) {
                        *slot = Some(*e);
                    }
                }
            }
            if !events.is_empty() {
                payload.clear();
                match postcard::to_io(&events, &mut payload) {
                    Ok(_) => {
                        let cmd = redis::cmd("PUBLISH").arg(&store.setup.channel).arg(&payload).to_owned();
                        match store.query::<i64>(cmd).await {
                            Ok(_) => store.stats.published.add(events.len() as u64),
                            Err(_) => store.stats.publish_errors.add(events.len() as u64),
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "redis publisher: cannot encode events"),
                }
            }
            if Instant::now() >= next_quotes {
                next_quotes = Instant::now() + interval;
                write_quotes(&store, &registry, &mut latest).await;
            }
            if popped == 0 {
                match idler.next_pause() {
                    Pause::Spin => std::hint::spin_loop(),
                    Pause::Yield => tokio::task::yield_now().await,
                    // It has no doorbell, so it is never asked to await one.
                    Pause::Park(d) | Pause::Await(d) => tokio::time::sleep(d).await,
                }
            } else {
                idler.reset();
            }
        }
        listener.abort();
    })
}

/// `SET quote:{SYM} <json> EX ttl` for every symbol quoted since the last write.
async fn write_quotes(store: &RedisStore, registry: &InstrumentRegistry, latest: &mut [Option<EngineEvent>]) {
    let mut pipe = redis::pipe();
    let mut n = 0;
    for slot in latest.iter_mut() {
        let Some(e) = slot.take() else { continue };
        let (
            Some(inst),
            EventData::Quote {
                bid,
                bid_qty,
                ask,
                ask_qty,
            },
        ) = (registry.get(e.instrument), e.data)
        else {
            continue;
        };
        let side = |p: i64, q: i64| {
            (q > 0).then(|| {
                (
                    Dec(Decimal::new(p, inst.price_scale)),
                    Dec(Decimal::new(q, inst.qty_scale)),
                )
            })
        };
        let (b, a) = (side(bid.0, bid_qty.0), side(ask.0, ask_qty.0));
        let value = json!({
            "symbol": inst.symbol,
            "bid": b.map(|s| s.0), "bid_qty": b.map(|s| s.1),
            "ask": a.map(|s| s.0), "ask_qty": a.map(|s| s.1),
            "quality": e.quality.as_str(),
            "exchange_ts": micros(e.exchange_ts),
            "recv_ts": micros(e.recv_ts),
        });
        pipe.cmd("SET")
            .arg(format!("quote:{}", inst.symbol))
            .arg(value.to_string())
            .arg("EX")
            .arg(store.setup.quote_ttl_secs)
            .ignore();
        n += 1;
    }
    if n > 0 && store.pipeline(&pipe).await.is_ok() {
        store.stats.quotes_written.add(n);
    }
}

/// API nodes that (re)join ask for every book again.
async fn listen_for_resync(store: Arc<RedisStore>, output: Arc<OutputStats>) {
    let channel = format!("{}:resync", store.setup.channel);
    loop {
        let subscribed = async {
            let mut pubsub = store.client().get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            let mut messages = pubsub.on_message();
            while messages.next().await.is_some() {
                output.request_resync();
            }
            Ok::<(), redis::RedisError>(())
        };
        if let Err(e) = subscribed.await {
            tracing::debug!(error = %e, "redis publisher: resync listener reconnecting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksblitz_testkit::instruments::crypto_spot;

    #[test]
    fn only_owned_instruments_are_published() {
        let registry = InstrumentRegistry::from_config(&[
            crypto_spot("AAA", "binance"),
            crypto_spot("BBB", "binance"),
            crypto_spot("CCC", "binance"),
        ])
        .expect("registry");
        let event = |i: u32| EngineEvent {
            instrument: InstrumentId(i),
            ..EngineEvent::EMPTY
        };
        let batch: Vec<EngineEvent> = [0, 1, 2, 1, 0, 2, 9].into_iter().map(event).collect();
        let all = published(&registry, None);
        let mut kept = batch.clone();
        keep_published(&mut kept, &all);
        assert_eq!(kept, batch[..6], "all owned: everything known is published");
        let some = published(&registry, Some(&[InstrumentId(0), InstrumentId(2)]));
        assert_eq!(some, [true, false, true]);
        let mut kept = batch.clone();
        keep_published(&mut kept, &some);
        let ids: Vec<u32> = kept.iter().map(|e| e.instrument.0).collect();
        assert_eq!(ids, [0, 2, 0, 2]);
    }
}
