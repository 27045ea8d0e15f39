//! The engine node's side of the order streams: forwarded commands in through the
//! consumer group, applied through the node's own order service (so a forwarded order
//! takes the same path, checks and journal as a local one), and the journaled order
//! output, answers and heartbeats out on the output stream, in order.
//!
//! Order of the output stream: the order fan-out hands its batch to this link
//! (`outputs`) before it completes the requests in it, so when an answer reaches the
//! publisher, the output it caused is already in the ring; the publisher drains the
//! ring before it writes answers. An API node therefore applies an order's events
//! before it answers the client.
//!
//! A command is acknowledged in the group (XACK) in the same round trip as its
//! answer is published. Until then it stays in the group's pending list, and a
//! restarted engine reads that list first: the journaled answer (found by the
//! command's tag in the recovered read model) is published again; nothing is
//! applied twice.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stocksblitz_engine::agent::{AgentError, ThreadHandle};
use stocksblitz_engine::orders::gateway::OrderOutput;
use stocksblitz_engine::orders::{AccountId, OrderEvent};
use stocksblitz_engine::ring::RingConsumer;
use stocksblitz_engine::UnixNanos;
use tokio::sync::mpsc;

use super::wire::{self, FromEngine, Refusal, ToEngine};
use super::{command_stream, output_stream, snapshot_key, ClusterStats, GROUP, SNAPSHOT_TTL_MS};
use crate::config::cluster::ClusterSetup;
use crate::orders::service::SubmitError;
use crate::orders::OrderService;
use crate::redis_store::runtime::spawn_async;
use crate::redis_store::RedisStore;

const HEARTBEAT: Duration = Duration::from_secs(1);
/// Output items per stream entry.
const ITEMS_PER_ENTRY: usize = 512;
/// Entries per publishing round trip.
const ENTRIES_PER_WRITE: usize = 64;
/// Commands being applied at once.
const IN_FLIGHT: usize = 1024;

/// A message for the output stream, with the command entry it answers (acknowledged
/// with it).
struct Outgoing {
    /// None: only the acknowledgement (an undecodable command).
    msg: Option<FromEngine>,
    ack: Option<String>,
    items: usize,
}

struct Link {
    setup: ClusterSetup,
    redis: Arc<RedisStore>,
    service: Arc<OrderService>,
    stats: Arc<ClusterStats>,
}

/// Runs the engine's side of the order streams until `stop`, then publishes what is
/// left (for a bounded time if Redis is down).
pub fn spawn_engine_link(
    setup: ClusterSetup,
    redis: Arc<RedisStore>,
    service: Arc<OrderService>,
    outputs: RingConsumer<OrderOutput>,
    stats: Arc<ClusterStats>,
    stop: Arc<AtomicBool>,
) -> Result<ThreadHandle, AgentError> {
    let link = Arc::new(Link {
        setup,
        redis,
        service,
        stats,
    });
    let flag = Arc::clone(&stop);
    spawn_async("cluster-engine-link", &flag, move || async move {
        let (tx, rx) = mpsc::unbounded_channel();
        let commands = tokio::spawn(read_commands(Arc::clone(&link), tx, Arc::clone(&stop)));
        publish(&link, outputs, rx, &stop).await;
        let _ = commands.await;
    })
}

/// Creates the consumer group (and the stream) if missing.
async fn ensure_group(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> redis::RedisResult<()> {
    let r: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match r {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

async fn read_commands(link: Arc<Link>, out: mpsc::UnboundedSender<Outgoing>, stop: Arc<AtomicBool>) {
    let in_flight = Arc::new(parking_lot::Mutex::new(HashSet::<(AccountId, [u8; 16])>::new()));
    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let stream = command_stream(&link.setup.engine);
    while !stop.load(Ordering::Acquire) {
        let session = async {
            let mut conn = super::blocking_connection(&link.redis).await?;
            ensure_group(&mut conn, &stream).await?;
            // This consumer's pending list first (commands read before a restart and
            // never answered), then new ones.
            let mut from = "0";
            while !stop.load(Ordering::Acquire) {
                let group = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&link.setup.node)
                    .to_owned();
                let v: redis::Value = super::blocking_read(group, &stream, from)
                    .query_async(&mut conn)
                    .await?;
                let entries = wire::entries(v).map_err(|e| redis::RedisError::from(std::io::Error::other(e)))?;
                if from == "0" && entries.is_empty() {
                    from = ">";
                }
                for entry in entries {
                    link.stats.commands_read.inc();
                    let Some(msg) = entry.data.as_deref().and_then(|d| wire::decode::<ToEngine>(d).ok()) else {
                        link.stats.commands_undecodable.inc();
                        let _ = out.send(Outgoing {
                            msg: None,
                            ack: Some(entry.id),
                            items: 0,
                        });
                        continue;
                    };
                    let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                        return Ok(());
                    };
                    let (link, out, in_flight) = (Arc::clone(&link), out.clone(), Arc::clone(&in_flight));
                    tokio::spawn(async move {
                        let reply = apply(&link, &in_flight, msg).await;
                        let _ = out.send(Outgoing {
                            msg: Some(reply),
                            ack: Some(entry.id),
                            items: 0,
                        });
                        drop(permit);
                    });
                }
                sample_group(&link, &mut conn, &stream).await;
            }
            Ok::<(), redis::RedisError>(())
        };
        if let Err(e) = session.await {
            tracing::warn!(error = %e, "cluster engine link: reading commands failed; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The group's lag and pending counts (XINFO GROUPS), at most once a second.
async fn sample_group(link: &Link, conn: &mut redis::aio::MultiplexedConnection, stream: &str) {
    thread_local! {
        static LAST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    }
    if LAST.with(|l| l.get().is_some_and(|t| t.elapsed() < HEARTBEAT)) {
        return;
    }
    LAST.with(|l| l.set(Some(Instant::now())));
    let Ok(v) = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async::<redis::Value>(conn)
        .await
    else {
        return;
    };
    let redis::Value::Array(groups) = v else { return };
    for g in groups {
        let fields: Vec<(String, redis::Value)> = match g {
            redis::Value::Array(f) => f
                .chunks(2)
                .filter_map(|p| match p {
                    [redis::Value::BulkString(k), v] => Some((String::from_utf8_lossy(k).into_owned(), v.clone())),
                    _ => None,
                })
                .collect(),
            redis::Value::Map(m) => m
                .into_iter()
                .filter_map(|(k, v)| match k {
                    redis::Value::BulkString(k) => Some((String::from_utf8_lossy(&k).into_owned(), v)),
                    redis::Value::SimpleString(k) => Some((k, v)),
                    _ => None,
                })
                .collect(),
            _ => continue,
        };
        let get = |name: &str| {
            fields.iter().find(|(k, _)| k == name).and_then(|(_, v)| match v {
                redis::Value::Int(i) => u64::try_from(*i).ok(),
                _ => None,
            })
        };
        let is_ours = fields
            .iter()
            .any(|(k, v)| k == "name" && matches!(v, redis::Value::BulkString(b) if b == GROUP.as_bytes()));
        if is_ours {
            link.stats.group_pending.set(get("pending").unwrap_or(0));
            link.stats.group_lag.set(get("lag").unwrap_or(0));
        }
    }
}

/// Applies one forwarded message; the reply to publish.
async fn apply(
    link: &Link,
    in_flight: &parking_lot::Mutex<HashSet<(AccountId, [u8; 16])>>,
    msg: ToEngine,
) -> FromEngine {
    match msg {
        ToEngine::Snapshot { node, request } => snapshot(link, node, request).await,
        ToEngine::Command {
            node,
            command,
            deadline,
        } => {
            let request = command.request;
            let answer = match command.idempotency {
                // Queries change nothing: no tag, nothing to deduplicate.
                None => submit(link, command).await,
                Some(tag) => {
                    let key = (command.account, tag.key);
                    // A copy already being applied: wait for it, then answer as it did.
                    while !in_flight.lock().insert(key) {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let prior = link
                        .service
                        .store()
                        .read()
                        .keyed(command.account, &tag.key, UnixNanos::now())
                        .map(|k| (k.body == tag.body).then(|| k.events()));
                    let answer = match prior {
                        Some(Some(Ok(events))) => {
                            link.stats.commands_deduplicated.inc();
                            Ok(events)
                        }
                        Some(Some(Err(_))) => Err(Refusal::Unknown),
                        Some(None) => Err(Refusal::KeyReused),
                        None if UnixNanos::now().0 > deadline.0 => {
                            link.stats.commands_expired.inc();
                            Err(Refusal::Expired)
                        }
                        None => submit(link, command).await,
                    };
                    in_flight.lock().remove(&key);
                    answer
                }
            };
            FromEngine::Answer { node, request, answer }
        }
    }
}

async fn submit(link: &Link, command: stocksblitz_engine::orders::Command) -> Result<Vec<OrderEvent>, Refusal> {
    let r = link
        .service
        .submit_keyed(command.account, command.kind, command.idempotency)
        .await;
    match r {
        Ok(events) => {
            link.stats.commands_applied.inc();
            Ok(events)
        }
        Err(SubmitError::Busy) => Err(Refusal::Busy),
        Err(SubmitError::JournalDown) => Err(Refusal::JournalDown),
        Err(SubmitError::KeyReused) => Err(Refusal::KeyReused),
        Err(_) => Err(Refusal::Unknown),
    }
}

/// Writes the read model for `node` under a key of its own; the answer names it.
async fn snapshot(link: &Link, node: String, request: u64) -> FromEngine {
    // A copy under the read lock, encoded after it: the order fan-out waits for the
    // lock, and encoding decodes every kept idempotent answer to write it out as
    // events, where a copy only copies its bytes.
    let store = link.service.store().read().clone();
    let (bytes, last_seq) = (wire::encode(&store), store.last_seq());
    drop(store);
    let key = snapshot_key(&link.setup.engine, &node, request);
    let set = redis::cmd("SET")
        .arg(&key)
        .arg(bytes)
        .arg("PX")
        .arg(SNAPSHOT_TTL_MS)
        .to_owned();
    match link.redis.query::<()>(set).await {
        Ok(()) => link.stats.snapshots_served.inc(),
        Err(e) => tracing::warn!(error = %e.0, "cluster engine link: could not store a snapshot"),
    }
    FromEngine::Snapshot {
        node,
        request,
        key,
        last_seq,
        owner: link.setup.owner.clone(),
    }
}

/// Publishes order output, answers and heartbeats, in that order, until `stop`.
async fn publish(
    link: &Link,
    mut outputs: RingConsumer<OrderOutput>,
    mut answers: mpsc::UnboundedReceiver<Outgoing>,
    stop: &AtomicBool,
) {
    let stream = output_stream(&link.setup.engine);
    let run = super::run_id();
    let mut last_seq = link.service.store().read().last_seq();
    let mut queue: VecDeque<Outgoing> = VecDeque::new();
    let mut held = 0usize;
    // Output taken from the ring, not yet in an entry (an unfinished step).
    let mut carry: Vec<OrderOutput> = Vec::with_capacity(ITEMS_PER_ENTRY);
    let mut last_beat: Option<Instant> = None;
    let mut stopping_since: Option<Instant> = None;
    // Answers taken but not yet queued: each is queued only after a drain of the ring
    // that began after it was taken.
    let mut replies: Vec<Outgoing> = Vec::new();
    loop {
        // Answers first, then the ring: the output an answer follows is in the ring
        // before the answer exists.
        while let Ok(a) = answers.try_recv() {
            replies.push(a);
        }
        while outputs.pop_batch(&mut carry, ITEMS_PER_ENTRY) > 0 {}
        // Entries of whole steps only (an API node applies each entry on its own);
        // the tail of a step still arriving waits in `carry`.
        let (entries, done) = whole_steps(&carry, ITEMS_PER_ENTRY);
        for range in entries {
            let items = carry.get(range).unwrap_or_default().to_vec();
            if let Some(seq) = items.iter().rev().find_map(|o| match o {
                OrderOutput::Event(e) => Some(e.seq),
                OrderOutput::Step(_) => None,
            }) {
                last_seq = seq;
            }
            held += items.len();
            let n = items.len();
            queue.push_back(Outgoing {
                msg: Some(FromEngine::Output(items)),
                ack: None,
                items: n,
            });
        }
        carry.drain(..done);
        queue.extend(replies.drain(..));
        if last_beat.is_none_or(|t| t.elapsed() >= HEARTBEAT) {
            last_beat = Some(Instant::now());
            queue.push_back(Outgoing {
                msg: Some(FromEngine::Heartbeat {
                    run,
                    last_seq,
                    owner: link.setup.owner.clone(),
                }),
                ack: None,
                items: 0,
            });
        }
        // Redis away too long: the oldest output goes (API nodes resync), answers stay.
        while held > link.setup.output_backlog {
            let Some(i) = queue.iter().position(|o| o.items > 0) else {
                break;
            };
            if let Some(o) = queue.remove(i) {
                held -= o.items;
                link.stats.output_dropped.add(o.items as u64);
            }
        }
        link.stats.output_backlog.set(held as u64);
        link.stats.last_seq.set(last_seq);
        let wrote = if queue.is_empty() {
            false
        } else {
            match write(link, &stream, &queue).await {
                Ok(n) => {
                    for o in queue.drain(..n) {
                        held -= o.items;
                        link.stats.output_published.add(o.items as u64);
                        if matches!(o.msg, Some(FromEngine::Answer { .. })) {
                            link.stats.answers_published.inc();
                        }
                    }
                    true
                }
                Err(e) => {
                    link.stats.publish_errors.inc();
                    tracing::debug!(error = %e.0, "cluster engine link: publishing failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    false
                }
            }
        };
        if stop.load(Ordering::Acquire) {
            let since = *stopping_since.get_or_insert_with(Instant::now);
            // Drain what is left; give up on an unreachable Redis after a few seconds.
            let empty = queue.is_empty() && replies.is_empty() && outputs.is_empty() && carry.is_empty();
            if empty || since.elapsed() > Duration::from_secs(5) {
                return;
            }
        }
        if !wrote {
            tokio::select! {
                Some(a) = answers.recv() => replies.push(a),
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
    }
}

/// Cuts `items` into entries of whole steps (a step record and all its events), each
/// at most `max` items unless one step is longer; returns them and where the last
/// complete step ends (what follows is a step still arriving).
fn whole_steps(items: &[OrderOutput], max: usize) -> (Vec<std::ops::Range<usize>>, usize) {
    let mut entries = Vec::new();
    let (mut start, mut done, mut remaining) = (0, 0, 0u32);
    for (i, item) in items.iter().enumerate() {
        remaining = match item {
            OrderOutput::Step(s) => s.events,
            OrderOutput::Event(_) => remaining.saturating_sub(1),
        };
        if remaining > 0 {
            continue;
        }
        // Step [done, i] is complete: close the entry before it if it would not fit.
        if i + 1 - start > max && done > start {
            entries.push(start..done);
            start = done;
        }
        done = i + 1;
        if done - start >= max {
            entries.push(start..done);
            start = done;
        }
    }
    if done > start {
        entries.push(start..done);
    }
    (entries, done)
}

/// Writes up to [`ENTRIES_PER_WRITE`] of `queue`'s front in one round trip (with the
/// acknowledgements of the commands answered); returns how many went.
async fn write(link: &Link, stream: &str, queue: &VecDeque<Outgoing>) -> Result<usize, crate::redis_store::RedisDown> {
    let n = queue.len().min(ENTRIES_PER_WRITE);
    let mut pipe = redis::pipe();
    let commands = command_stream(&link.setup.engine);
    for o in queue.iter().take(n) {
        if let Some(msg) = &o.msg {
            pipe.add_command(wire::xadd(stream, link.setup.output_stream_len, msg))
                .ignore();
        }
        if let Some(id) = &o.ack {
            pipe.cmd("XACK").arg(&commands).arg(GROUP).arg(id).ignore();
        }
    }
    link.redis.pipeline(&pipe).await.map(|()| n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream(events: &[u8]) -> Vec<OrderOutput> {
        crate::cluster::wire::test_output(events)
    }

    proptest! {
        /// However the ring hands the output over, the entries are whole steps, at
        /// most `max` items unless one step is longer, and together they are the
        /// output, in order, once.
        #[test]
        fn entries_are_whole_steps(
            steps in proptest::collection::vec(0u8..6, 0..50),
            batches in proptest::collection::vec(1usize..9, 1..30),
            max in 1usize..8,
        ) {
            let all = stream(&steps);
            let (mut carry, mut out, mut at) = (Vec::new(), Vec::new(), 0);
            let mut sizes = batches.iter().cycle();
            while at < all.len() {
                let n = (*sizes.next().unwrap_or(&1)).min(all.len() - at);
                carry.extend_from_slice(&all[at..at + n]);
                at += n;
                let (entries, done) = whole_steps(&carry, max);
                for r in entries {
                    let e = carry[r].to_vec();
                    let first_is_step = matches!(e.first(), Some(OrderOutput::Step(_)));
                    prop_assert!(first_is_step);
                    let steps_in = e.iter().filter(|o| matches!(o, OrderOutput::Step(_))).count();
                    prop_assert!(e.len() <= max || steps_in == 1, "{} items, {} steps", e.len(), steps_in);
                    let declared: u32 = e.iter().map(|o| match o { OrderOutput::Step(s) => s.events, _ => 0 }).sum();
                    prop_assert_eq!(declared as usize, e.len() - steps_in);
                    out.extend(e);
                }
                carry.drain(..done);
            }
            prop_assert!(carry.is_empty());
            prop_assert_eq!(out, all);
        }
    }
}
