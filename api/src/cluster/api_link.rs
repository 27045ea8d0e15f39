//! The API node's side of the order streams: commands out to the engine's command
//! stream ([`RemoteEngine`]), and the engine's output stream in ([`spawn_api_link`]):
//! the replica of the order read model, the private WebSocket channels, and the
//! answers routed to waiting requests.
//!
//! The replica starts from a snapshot the engine writes on request and follows the
//! output stream from a position read before asking, so nothing between the two is
//! missed (output older than the snapshot is skipped by its event sequence). A gap in
//! the sequence, or a heartbeat naming a sequence this node has not seen, means output
//! was lost on the way: private channels close with 4008 (their clients resync over
//! REST) and the replica is rebuilt the same way.
//!
//! With more than one engine, each has its own [`RemoteEngine`], link thread and
//! replica (`OrderService::stores()[index]`). Each engine announces what it owns (its
//! shard and instruments); a node accepts the announcement only if its instrument ids
//! mean the same symbols here and no other engine claims the same instruments or
//! shard ([`Claims`]), and routes orders by it (`crate::orders::route`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stocksblitz_engine::agent::{AgentError, ThreadHandle};
use stocksblitz_engine::orders::gateway::OrderOutput;
use stocksblitz_engine::orders::store::OrderStore;
use stocksblitz_engine::orders::{Command, CommandKind, IdemTag, OrderEvent, StepAssembler};
use stocksblitz_engine::UnixNanos;

use parking_lot::Mutex;
use stocksblitz_engine::{InstrumentId, InstrumentRegistry};

use super::wire::{self, FromEngine, Refusal, ToEngine};
use super::{command_stream, output_stream, ClusterStats};
use crate::config::cluster::{ClusterSetup, Owner};
use crate::orders::forward::{Answer, BoxFuture, Forward, SubmitError};
use crate::orders::OrderService;
use crate::redis_store::runtime::spawn_async;
use crate::redis_store::RedisStore;
use crate::ws::hub::Hub;

/// How long an engine may stay silent (no heartbeat) before this node says so.
pub const ENGINE_SILENT_AFTER: Duration = Duration::from_secs(3);
/// How long to wait for a requested snapshot before asking again.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);
/// Output held while a snapshot is awaited; past it the sync starts over.
const BUFFER_MAX: usize = 1_000_000;

/// What every engine of an API node has announced, in configuration order: an
/// announcement that overlaps another engine's is refused.
pub struct Claims {
    owners: Mutex<Vec<Option<Owner>>>,
    registry: Arc<InstrumentRegistry>,
}

impl Claims {
    pub fn new(engines: usize, registry: Arc<InstrumentRegistry>) -> Arc<Self> {
        Arc::new(Self {
            owners: Mutex::new(vec![None; engines]),
            registry,
        })
    }

    /// Records engine `index`'s announcement, or says why it cannot be used.
    fn accept(&self, index: usize, engine: &str, owner: &Owner) -> Result<(), String> {
        for (symbol, id) in &owner.instruments {
            let here = self.registry.by_symbol(symbol).map(|i| i.id.0);
            if here != Some(*id) {
                return Err(format!(
                    "engine {engine} trades {symbol} as instrument {id}, this node has {}: every node needs the same \
                     [[instruments]]",
                    here.map_or_else(|| "no such instrument".to_owned(), |h| format!("instrument {h}"))
                ));
            }
        }
        let mut owners = self.owners.lock();
        for (k, other) in owners.iter().enumerate() {
            let Some(other) = other.as_ref().filter(|_| k != index) else {
                continue;
            };
            if other.shard == owner.shard {
                return Err(format!(
                    "engine {engine} has shard {} like another engine of cluster.engines: each engine needs its own \
                     cluster.shard",
                    owner.shard
                ));
            }
            if let Some((symbol, _)) = owner.instruments.iter().find(|i| other.instruments.contains(i)) {
                return Err(format!(
                    "engine {engine} and another engine of cluster.engines both own {symbol}: each instrument \
                     belongs to one engine's cluster.instruments"
                ));
            }
        }
        if let Some(slot) = owners.get_mut(index) {
            *slot = Some(owner.clone());
        }
        Ok(())
    }
}

/// What an engine owns, as this node routes by it.
struct Routing {
    shard: u8,
    /// By instrument id.
    owned: Vec<bool>,
}

/// Commands out, to one engine node.
pub struct RemoteEngine {
    pub setup: ClusterSetup,
    /// Its replica: `OrderService::stores()[index]`.
    pub index: usize,
    redis: Arc<RedisStore>,
    /// This run's id: a command's tag is made of it, the node and the request id.
    run: u64,
    pub stats: Arc<ClusterStats>,
    claims: Arc<Claims>,
    /// What the engine announced, once accepted.
    routing: parking_lot::RwLock<Option<Routing>>,
}

impl RemoteEngine {
    pub fn new(
        setup: ClusterSetup,
        index: usize,
        redis: Arc<RedisStore>,
        stats: Arc<ClusterStats>,
        claims: Arc<Claims>,
    ) -> Self {
        Self {
            setup,
            index,
            redis,
            run: super::run_id(),
            stats,
            claims,
            routing: parking_lot::RwLock::new(None),
        }
    }

    /// Whether `owner` is what this node routes by now.
    fn announced(&self, owner: &Owner) -> bool {
        self.claims
            .owners
            .lock()
            .get(self.index)
            .is_some_and(|o| o.as_ref() == Some(owner))
    }

    /// Routes by `owner` from now on, if it fits this node and the other engines.
    fn accept(&self, owner: &Owner) -> Result<(), String> {
        self.claims.accept(self.index, &self.setup.engine, owner)?;
        let mut owned = vec![false; self.claims.registry.len()];
        for (_, id) in &owner.instruments {
            if let Some(slot) = owned.get_mut(*id as usize) {
                *slot = true;
            }
        }
        *self.routing.write() = Some(Routing {
            shard: owner.shard,
            owned,
        });
        *self.stats.problem.lock() = None;
        Ok(())
    }

    async fn xadd(&self, msg: &ToEngine) -> Result<(), crate::redis_store::RedisDown> {
        let stream = command_stream(&self.setup.engine);
        let cmd = wire::xadd(&stream, self.setup.command_stream_len, msg);
        self.redis.query::<String>(cmd).await.map(|_| ())
    }
}

impl Forward for RemoteEngine {
    fn synced(&self) -> bool {
        self.stats.synced.get() == 1
    }

    /// Nothing leaves while the replica is resynchronizing or Redis is known to be down.
    fn ready(&self) -> Result<(), SubmitError> {
        if !self.synced() {
            return Err(SubmitError::NotSynced);
        }
        if self.redis.stats.connected.get() == 0 {
            return Err(SubmitError::Unreachable);
        }
        Ok(())
    }

    /// The command with the tag the engine applies it under at most once: the
    /// client's `Idempotency-Key` when it had one, else one of this run and request.
    /// Queries (a test order, risk usage) change nothing and carry none.
    fn tagged(&self, mut cmd: Command) -> Command {
        if cmd.idempotency.is_none() && !matches!(cmd.kind, CommandKind::Test(_) | CommandKind::QueryRisk) {
            let id = format!("cmd:{}:{:016x}:{}", self.setup.node, self.run, cmd.request);
            cmd.idempotency = Some(IdemTag::new(&id, &[]));
        }
        cmd
    }

    /// Adds the command to the engine's command stream.
    fn send(&self, command: Command, deadline: UnixNanos) -> BoxFuture<'_, Result<(), Option<SubmitError>>> {
        Box::pin(async move {
            let msg = ToEngine::Command {
                node: self.setup.node.clone(),
                command,
                deadline,
            };
            self.xadd(&msg).await.map_err(|_| None)?;
            self.stats.commands_sent.inc();
            Ok(())
        })
    }

    fn name(&self) -> &str {
        &self.setup.engine
    }

    fn owns(&self, instrument: InstrumentId) -> Option<bool> {
        let routing = self.routing.read();
        let r = routing.as_ref()?;
        Some(r.owned.get(instrument.index()).copied().unwrap_or(false))
    }

    fn shard(&self) -> Option<u8> {
        self.routing.read().as_ref().map(|r| r.shard)
    }
}

/// A refusal from the engine as this node's error.
fn refusal(r: Refusal, request: u64) -> SubmitError {
    match r {
        Refusal::Busy => SubmitError::Busy,
        Refusal::JournalDown => SubmitError::JournalDown,
        Refusal::KeyReused => SubmitError::KeyReused,
        Refusal::Expired | Refusal::Unknown => SubmitError::Timeout { request },
    }
}

/// The replica's state while following the stream.
struct Replica {
    service: Arc<OrderService>,
    remote: Arc<RemoteEngine>,
    hub: Arc<Hub>,
    events: Vec<OrderEvent>,
    /// A snapshot asked for (its request id, when), and the output read since.
    awaiting: Option<(u64, Instant)>,
    buffered: Vec<OrderOutput>,
    next_request: u64,
    /// The engine run last heard from: a restarted engine may have a history this
    /// replica does not match.
    engine_run: Option<u64>,
    /// The last output stream id read (kept across reconnects: entries Redis lost in
    /// a restart show as a sequence gap, not as a reason to start over).
    from: Option<String>,
}

impl Replica {
    fn stats(&self) -> &ClusterStats {
        &self.remote.stats
    }

    /// Output lost on the way: private channels close, and the replica is rebuilt.
    fn lost(&mut self, why: &str) {
        if self.stats().synced.get() == 1 {
            tracing::warn!(why, engine = %self.remote.setup.engine, "order replica out of step: resynchronizing");
            self.hub.break_private();
        }
        self.stats().synced.set(0);
        self.awaiting = None;
    }

    /// This engine's replica.
    fn store(&self) -> &parking_lot::RwLock<OrderStore> {
        &self.service.stores()[self.remote.index]
    }

    /// Applies output in journal order and hands what it applied to the private
    /// channels; `false` at a gap, where it stops. The hand-off happens while the
    /// replica is still locked: a private subscription snapshots every replica under
    /// its read lock, so each event is either in its snapshot or queued to it, never
    /// both (with several engines there is no one sequence to cut at).
    fn apply(&mut self, items: &[OrderOutput]) -> bool {
        let mut store = self.service.stores()[self.remote.index].write();
        let in_step = apply_in_order(&mut store, items, &mut self.events);
        self.stats().last_seq.set(store.last_seq());
        self.stats().output_applied.add(items.len() as u64);
        self.hub.dispatch_private(&self.events);
        drop(store);
        self.events.clear();
        in_step
    }

    /// The engine's announcement: used for routing if it fits, else the replica stays
    /// out of step (order routes for what it may own answer ORDERS_NOT_SYNCED) and
    /// health says why.
    fn accept(&self, owner: &Owner) -> bool {
        match self.remote.accept(owner) {
            Ok(()) => true,
            Err(why) => {
                let mut problem = self.stats().problem.lock();
                if problem.as_deref() != Some(why.as_str()) {
                    tracing::error!(engine = %self.remote.setup.engine, %why, "cluster: refusing the engine's announcement");
                    *problem = Some(why);
                }
                false
            }
        }
    }

    fn answer(&self, request: u64, answer: Result<Vec<OrderEvent>, Refusal>) {
        self.stats().answers_received.inc();
        let a: Answer = answer.map_err(|r| refusal(r, request));
        self.service.answer(request, a);
    }
}

/// Applies one output entry (whole steps: the engine never splits a step across
/// entries) to `store` in event-sequence order, appending what it applied to
/// `applied`. Steps it already holds (a redelivery, the overlap with a snapshot) are
/// skipped; `false` at the first step that does not follow on, or whose events skip a
/// number (output was lost), where it stops.
fn apply_in_order(store: &mut OrderStore, items: &[OrderOutput], applied: &mut Vec<OrderEvent>) -> bool {
    let mut steps = StepAssembler::default();
    let mut last = store.last_seq();
    for item in items {
        let Some((step, events)) = steps.push(item) else {
            continue;
        };
        let first = events.first().map_or(last + 1, |e| e.seq);
        if !events.iter().zip(first..).all(|(e, n)| e.seq == n) {
            return false;
        }
        if events.is_empty() || first > last {
            if first != last + 1 {
                return false;
            }
            store.apply_step(&step, events);
            last = store.last_seq();
            applied.extend_from_slice(events);
        }
    }
    true
}

/// Reads the engine's output stream into `service`'s replica and `hub` until `stop`.
pub fn spawn_api_link(
    service: Arc<OrderService>,
    remote: Arc<RemoteEngine>,
    hub: Arc<Hub>,
    redis: Arc<RedisStore>,
    stop: Arc<AtomicBool>,
) -> Result<ThreadHandle, AgentError> {
    let mut replica = Replica {
        service,
        remote,
        hub,
        events: Vec::with_capacity(4096),
        awaiting: None,
        buffered: Vec::new(),
        next_request: 1,
        engine_run: None,
        from: None,
    };
    let flag = Arc::clone(&stop);
    spawn_async("cluster-api-link", &flag, move || async move {
        while !stop.load(Ordering::Acquire) {
            if let Err(e) = follow(&mut replica, &redis, &stop).await {
                replica.stats().read_errors.inc();
                tracing::warn!(error = %e, "cluster api link: reading the engine's output failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    })
}

type Failed = Box<dyn std::error::Error + Send + Sync>;

/// The newest id on `stream` ("0-0" when empty or absent).
async fn newest(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> redis::RedisResult<String> {
    let v: redis::Value = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    let list = wire::entries(redis::Value::Array(vec![redis::Value::Array(vec![
        redis::Value::Nil,
        v,
    ])]))
    .unwrap_or_default();
    Ok(list.last().map_or_else(|| "0-0".to_owned(), |e| e.id.clone()))
}

async fn follow(r: &mut Replica, redis: &Arc<RedisStore>, stop: &AtomicBool) -> Result<(), Failed> {
    let stream = output_stream(&r.remote.setup.engine);
    let mut conn = super::blocking_connection(redis).await?;
    // Through the shared connection too: its state is what order entry checks first.
    redis
        .query::<String>(redis::cmd("PING"))
        .await
        .map_err(|e| Failed::from(e.0))?;
    let mut from = match r.from.take() {
        Some(id) => id,
        None => newest(&mut conn, &stream).await?,
    };
    while !stop.load(Ordering::Acquire) {
        r.from = Some(from.clone());
        if r.stats().synced.get() == 0 && r.awaiting.is_none_or(|(_, at)| at.elapsed() > SNAPSHOT_WAIT) {
            // Read from here on, then ask: everything after the snapshot is after here.
            from = newest(&mut conn, &stream).await?;
            let request = r.next_request;
            r.next_request += 1;
            r.buffered.clear();
            r.remote
                .xadd(&ToEngine::Snapshot {
                    node: r.remote.setup.node.clone(),
                    request,
                })
                .await
                .map_err(|e| Failed::from(e.0))?;
            r.awaiting = Some((request, Instant::now()));
        }
        let v: redis::Value = super::blocking_read(redis::cmd("XREAD"), &stream, &from)
            .query_async(&mut conn)
            .await?;
        for entry in wire::entries(v)? {
            from = entry.id.clone();
            r.from = Some(from.clone());
            if let Some(ms) = wire::id_ms(&entry.id) {
                let now_ms = (UnixNanos::now().0 / 1_000_000).max(0) as u64;
                r.stats().stream_lag_ms.set(now_ms.saturating_sub(ms));
            }
            let Some(msg) = entry.data.as_deref().and_then(|d| wire::decode::<FromEngine>(d).ok()) else {
                redis.stats.decode_errors.inc();
                continue;
            };
            handle(r, redis, msg).await?;
        }
    }
    Ok(())
}

async fn handle(r: &mut Replica, redis: &Arc<RedisStore>, msg: FromEngine) -> Result<(), Failed> {
    let me = r.remote.setup.node.as_str();
    match msg {
        FromEngine::Output(items) => {
            if r.awaiting.is_some() {
                r.buffered.extend_from_slice(&items);
                if r.buffered.len() > BUFFER_MAX {
                    r.awaiting = None;
                }
            } else if r.stats().synced.get() == 1 && !r.apply(&items) {
                r.lost("a gap in the engine's event sequence");
            }
        }
        FromEngine::Answer { node, request, answer } if node == me => r.answer(request, answer),
        FromEngine::Answer { .. } => {}
        FromEngine::Snapshot {
            node,
            request,
            key,
            last_seq,
            owner,
        } if node == me && r.awaiting.is_some_and(|(q, _)| q == request) => {
            let bytes: Option<Vec<u8>> = redis
                .query(redis::cmd("GET").arg(&key).to_owned())
                .await
                .map_err(|e| Failed::from(e.0))?;
            let _ = redis.query::<i64>(redis::cmd("DEL").arg(&key).to_owned()).await;
            let Some(store) = bytes.and_then(|b| wire::decode::<OrderStore>(&b).ok()) else {
                tracing::warn!(%key, "cluster api link: the engine's snapshot is missing or does not decode; asking again");
                r.awaiting = None;
                return Ok(());
            };
            if !r.accept(&owner) {
                // Asked again after SNAPSHOT_WAIT (request 0 is never one of ours): a
                // misconfigured engine is not made to write snapshots back to back.
                r.awaiting = Some((0, Instant::now()));
                return Ok(());
            }
            {
                let mut mine = r.store().write();
                if !store.fits(&mine) {
                    return Err(Failed::from(
                        "the engine's order snapshot has other accounts than [orders] here: the nodes' configurations \
                         differ",
                    ));
                }
                *mine = store;
            }
            debug_assert_eq!(r.store().read().last_seq(), last_seq);
            r.awaiting = None;
            let buffered = std::mem::take(&mut r.buffered);
            if r.apply(&buffered) {
                r.stats().resyncs.inc();
                r.stats().synced.set(1);
                tracing::info!(engine = %r.remote.setup.engine, last_seq, "order replica in step with the engine");
            } else {
                r.lost("a gap right after the snapshot");
            }
        }
        FromEngine::Snapshot { .. } => {}
        FromEngine::Heartbeat { run, last_seq, owner } => {
            r.stats().engine_heartbeat_ns.set(UnixNanos::now().0.max(0) as u64);
            let restarted = r.engine_run.is_some_and(|was| was != run);
            r.engine_run = Some(run);
            let mine = r.store().read().last_seq();
            // Ahead of this node: output was missed. A restarted engine behind it: its
            // journal lost what this replica holds (a restore), so rebuild from it.
            if r.stats().synced.get() == 1 && (last_seq > mine || (restarted && last_seq != mine)) {
                r.lost("the engine published output this node never read, or restarted with another history");
            }
            // A restarted engine that owns something else now: route by it only after a
            // resync (the replica is rebuilt from that engine's snapshot).
            if r.stats().synced.get() == 1 && !r.remote.announced(&owner) {
                r.lost("the engine announced other instruments or another shard");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Steps with `events[i]` events each, numbered from 1, flattened as the ring has them.
    fn stream(events: &[u8]) -> Vec<OrderOutput> {
        crate::cluster::wire::test_output(events)
    }

    fn seqs(items: &[OrderOutput]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|o| match o {
                OrderOutput::Event(e) => Some(e.seq),
                OrderOutput::Step(_) => None,
            })
            .collect()
    }

    proptest! {
        /// Output cut into entries of whole steps (as the engine publishes it), in
        /// order, any entry delivered twice: every event applied once, in order, never
        /// a false gap. With an entry lost: a gap is reported exactly when the loss
        /// took events and an entry with events follows it, and nothing past the gap
        /// is applied.
        #[test]
        fn gaps_are_found_and_repeats_are_harmless(
            steps in proptest::collection::vec(0u8..4, 1..40),
            per_entry in proptest::collection::vec(1usize..4, 1..40),
            repeat in proptest::option::of(0usize..40),
            lose in proptest::option::of(0usize..40),
        ) {
            let mut entries: Vec<Vec<OrderOutput>> = Vec::new();
            let (mut at, mut seq) = (0, 0u64);
            let mut sizes = per_entry.iter().cycle();
            while at < steps.len() {
                let n = (*sizes.next().unwrap_or(&1)).min(steps.len() - at);
                let mut entry = stream(&steps[at..at + n]);
                for o in &mut entry {
                    if let OrderOutput::Event(e) = o {
                        e.seq += seq;
                    }
                }
                seq += seqs(&entry).len() as u64;
                entries.push(entry);
                at += n;
            }
            let total = seq;
            let lost = lose.map(|i| i % entries.len());
            let mut delivered: Vec<&Vec<OrderOutput>> = Vec::new();
            for (i, e) in entries.iter().enumerate() {
                if Some(i) == lost {
                    continue;
                }
                delivered.push(e);
                if repeat.is_some_and(|r| r % entries.len() == i) {
                    delivered.push(e);
                }
            }
            let mut store = OrderStore::new(1, 100);
            let mut applied = Vec::new();
            let mut in_step = true;
            for e in delivered {
                if !apply_in_order(&mut store, e, &mut applied) {
                    in_step = false;
                    break;
                }
            }
            let got: Vec<u64> = applied.iter().map(|e| e.seq).collect();
            prop_assert_eq!(&got, &(1..=got.len() as u64).collect::<Vec<_>>(), "applied once, in order");
            prop_assert_eq!(store.last_seq(), got.len() as u64);
            let took_events = lost.is_some_and(|i| !seqs(&entries[i]).is_empty());
            let events_after = lost.is_some_and(|i| entries[i + 1..].iter().any(|e| !seqs(e).is_empty()));
            prop_assert_eq!(in_step, !(took_events && events_after));
            if !took_events {
                prop_assert_eq!(store.last_seq(), total);
            }
        }
    }
}
