//! Wiring: builds the rings, starts every thread in the stages of the ARCHITECTURE
//! diagram, and serves the API. Used by the binary and by integration tests (which
//! bind port 0).
//!
//! ```text
//! 1 sources      simulator, feeds (one pinned thread each; started after the
//!                   | one SPSC input ring per feed      engine, once the journal is recovered)
//! 2 engine       engine (pinned) ---- order ring ----> journal -> snapshots
//!                   | API output ring  \ store ring         | durable steps
//! 3 fan-outs     api-fanout (mirror,  |                order-fanout (read model, hub)
//!                   | hub) tap ring   |
//! 4 stores       redis-publisher      questdb-tap -> questdb-sink
//! 5 serve        the tokio runtime: HTTP and WebSocket
//! ```
//!
//! Every thread is an agent or a blocking loop started through
//! `stocksblitz_engine::agent` with its name, core and idle strategy. Shutdown runs
//! the stages in an order that loses nothing (see [`Threads::stop_and_join`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use parking_lot::RwLock;
use stocksblitz_engine::agent::{spawn_agent, spawn_thread, AgentSpec, ThreadHandle};
use stocksblitz_engine::doorbell::Doorbell;
use stocksblitz_engine::journal::{self, JournalStats, JournalThread, JournalWriter, RunStart, Snapshotter};
use stocksblitz_engine::orders::gateway::{command_queue, OrderGateway, OrderOutput};
use stocksblitz_engine::orders::OrderManager;
use stocksblitz_engine::publisher::{OutputKind, OutputStats};
use stocksblitz_engine::ring::{ring, RingConsumer, RingProducer};
use stocksblitz_engine::stats::EngineStats;
use stocksblitz_engine::tick_ring::{tick_ring, TickConsumer, TickProducer};
use stocksblitz_engine::{Engine, EngineEvent, EngineHandles, Price, UnixNanos};
use stocksblitz_feed_handlers::live::spawn_live;
use stocksblitz_feed_handlers::replay_feed::spawn_replay;
use stocksblitz_feed_handlers::{spawn_synthetic, FeedHandle, FeedKind, SimSpec, SyntheticMarket};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::cluster::api_link::{spawn_api_link, Claims, RemoteEngine};
use crate::cluster::engine_link::spawn_engine_link;
use crate::cluster::ClusterStats;
use crate::config::orders::OrderSetup;
use crate::config::Validated;
use crate::http::metrics::counters::HttpMetrics;
use crate::http::tls::TlsFiles;
use crate::market::{spawn_fanout, Market, Mirror};
use crate::orders::accounts::Accounts;
use crate::orders::fanout::spawn_order_fanout;
use crate::orders::OrderService;
use crate::redis_store::RedisStore;
use crate::sink::row::Table;
use crate::sink::SinkStats;
use crate::state::{AppState, FeedInfo, Security};
use crate::ws::hub::Hub;
use stocksblitz_engine::orders::store::OrderStore;
use stocksblitz_engine::surveillance::Surveillance;

pub struct RunningApp {
    pub addr: SocketAddr,
    pub state: AppState,
    /// Stops sources, engine and fan-outs.
    stop: Arc<AtomicBool>,
    /// Stops the journal and the stores, after the engine has stopped.
    journal_stop: Arc<AtomicBool>,
    /// Stops the order streams' link, last (what the fan-outs handed it goes out).
    cluster_stop: Arc<AtomicBool>,
    threads: Option<Threads>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    shutdown: Option<oneshot::Sender<()>>,
    /// The certificate files, when serving TLS.
    tls: Option<Arc<TlsFiles>>,
}

/// The threads of a node, by stage.
#[derive(Default)]
struct Threads {
    /// 1, sources: the in-process venue simulator and the feeds.
    simulator: Option<ThreadHandle>,
    feeds: Vec<FeedHandle>,
    /// 2: the engine, and the journal that makes its order steps durable, with its
    /// snapshot thread.
    engine: Option<ThreadHandle>,
    journal: Option<ThreadHandle>,
    snapshots: Option<ThreadHandle>,
    /// 3, fan-outs: market data (engine output ring) and orders (journal output).
    fanout: Option<ThreadHandle>,
    order_fanout: Option<ThreadHandle>,
    /// 4, stores: the QuestDB sink; the Redis publisher (engine node) or subscriber
    /// (API node, where it is the source).
    questdb: Option<ThreadHandle>,
    redis: Option<ThreadHandle>,
    /// 6, with `[cluster]`: the order streams' links (the engine node's; an API
    /// node's, one per engine).
    cluster: Vec<ThreadHandle>,
}

/// Joins a thread; a panic is logged with its name.
fn join(t: Option<ThreadHandle>) {
    if let Some(t) = t {
        t.join_logged();
    }
}

impl Threads {
    /// Stops and joins every thread, losing nothing on the way:
    /// 1. `stop`: sources, engine and fan-outs stop; the engine is joined first, so
    ///    everything it did is on its rings (the sink's tap drains its ring until the
    ///    engine has gone);
    /// 2. `journal_stop`: the journal and the stores drain what is left and are
    ///    joined (the journal journals every step the engine took);
    /// 3. the feeds, the fan-outs and the simulator are joined;
    /// 4. `cluster_stop`: the order streams' link publishes what the order fan-out
    ///    handed it and is joined.
    fn stop_and_join(self, stop: &AtomicBool, journal_stop: &AtomicBool, cluster_stop: &AtomicBool) {
        stop.store(true, Ordering::Relaxed);
        join(self.engine);
        journal_stop.store(true, Ordering::Release);
        for t in [self.journal, self.snapshots, self.questdb, self.redis] {
            join(t);
        }
        for f in self.feeds {
            f.join();
        }
        for t in [self.fanout, self.order_fanout, self.simulator] {
            join(t);
        }
        cluster_stop.store(true, Ordering::Release);
        for t in self.cluster {
            t.join_logged();
        }
    }
}

/// Sets its flags when dropped (start-up failed): threads already started stop.
struct StopOnError(Vec<Arc<AtomicBool>>);

impl Drop for StopOnError {
    fn drop(&mut self) {
        for f in &self.0 {
            f.store(true, Ordering::Release);
        }
    }
}

/// Starts the in-process feed simulator on its own thread; returns its address.
fn start_simulator(v: &Validated, stop: &Arc<AtomicBool>) -> anyhow::Result<Option<(SocketAddr, ThreadHandle)>> {
    let Some(cfg) = v.config.simulator.as_ref().filter(|s| s.enabled) else {
        return Ok(None);
    };
    let setup = stocksblitz_feed_handlers::sim::setup_from(&v.registry, cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let listener = std::net::TcpListener::bind(&cfg.listen)
        .with_context(|| format!("simulator cannot listen on {} (simulator.listen)", cfg.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let flag = Arc::clone(stop);
    let stop = Arc::clone(stop);
    // Blocks in an async runtime of its own, serving the venues' protocols.
    let join = spawn_thread("feed-sim", None, move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "simulator runtime");
                return;
            }
        };
        rt.block_on(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "simulator listener");
                    return;
                }
            };
            let handle = match stocksblitz_feed_handlers::sim::start(setup, listener).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(error = %e, "simulator start");
                    return;
                }
            };
            tracing::info!(addr = %handle.addr, "feed simulator serving");
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            handle.stop().await;
        });
    })
    .context("starting the simulator thread")?
    .with_stop(&flag);
    Ok(Some((addr, join)))
}

/// One input ring per configured feed, in `[[feeds]]` order; each feed wakes the
/// engine through `engine`.
fn feed_rings(v: &Validated, engine: &Doorbell) -> (Vec<TickProducer>, Vec<TickConsumer>) {
    v.config
        .feeds
        .iter()
        .map(|f| {
            let (p, c) = tick_ring(format!("feed-{}", f.name), v.config.engine.input_ring_capacity);
            (p.waking(engine), c)
        })
        .unzip()
}

/// The doorbells of the threads that sleep until their producers hand them work
/// (`stocksblitz_engine::doorbell`): each producer rings its consumer's.
#[derive(Default)]
struct Doorbells {
    /// Rung by the feeds and the API's command pushes.
    engine: Doorbell,
    /// Rung by the engine (or, on an API node, the Redis subscriber).
    fanout: Doorbell,
    /// Rung by the engine when it hands over steps.
    journal: Doorbell,
    /// Rung by the journal when steps became durable.
    order_fanout: Doorbell,
}

/// Starts every feed on its ring (from [`feed_rings`]). Called once the engine runs:
/// a feed started earlier would fill its ring while the order journal recovers, and
/// the engine would then drop the overflow and resync (and flood its own outputs with
/// the backlog).
fn start_feeds(
    v: &Validated,
    stop: &Arc<AtomicBool>,
    sim: Option<SocketAddr>,
    producers: Vec<TickProducer>,
) -> anyhow::Result<Vec<FeedHandle>> {
    let mut handles = Vec::new();
    for (f, producer) in v.config.feeds.iter().zip(producers) {
        match f.kind {
            FeedKind::Replay => {
                let r = f
                    .replay
                    .as_ref()
                    .context("validated replay feed lost its [feeds.replay]")?;
                let h = spawn_replay(
                    f.name.clone(),
                    f.core,
                    r,
                    &v.registry,
                    &f.instruments,
                    producer,
                    Arc::clone(stop),
                )
                .map_err(|e| anyhow::anyhow!("starting feed {}: {e}", f.name))?;
                handles.push(h);
            }
            FeedKind::Live(venue) => {
                let mut live = f.live.clone().context("validated venue feed lost its [feeds.live]")?;
                if let Some(addr) = sim {
                    live.resolve_simulator(addr);
                }
                let h = spawn_live(
                    f.name.clone(),
                    venue,
                    f.core,
                    live,
                    &v.registry,
                    &f.instruments,
                    producer,
                    Arc::clone(stop),
                )
                .map_err(|e| anyhow::anyhow!("starting feed {}: {e}", f.name))?;
                handles.push(h);
            }
            FeedKind::Synthetic => {
                let s = f
                    .synthetic
                    .as_ref()
                    .context("validated synthetic feed lost its settings")?;
                let specs: Vec<SimSpec> = f
                    .instruments
                    .iter()
                    .filter_map(|sym| v.registry.by_symbol(sym))
                    .map(|inst| SimSpec {
                        id: inst.id,
                        tick_size: inst.tick_size,
                        lot_size: inst.lot_size,
                        start_price: s
                            .start_prices
                            .get(&inst.symbol)
                            .and_then(|p| Price::parse_str(p, inst.price_scale).ok())
                            .unwrap_or(inst.tick_size),
                    })
                    .collect();
                let market = SyntheticMarket::new(s.seed, s.depth, &specs);
                let h = spawn_synthetic(
                    f.name.clone(),
                    f.core,
                    f.idle,
                    s.rate_per_sec,
                    market,
                    producer,
                    Arc::clone(stop),
                )
                .with_context(|| format!("starting feed {}", f.name))?;
                handles.push(h);
            }
        }
    }
    Ok(handles)
}

/// Starts everything and begins serving on `listener`.
pub async fn start_on(v: Validated, listener: TcpListener) -> anyhow::Result<RunningApp> {
    let addr = listener.local_addr().context("reading the bound address")?;
    let stop = Arc::new(AtomicBool::new(false));
    let journal_stop = Arc::new(AtomicBool::new(false));
    let cluster_stop = Arc::new(AtomicBool::new(false));
    // If start-up fails part way, the threads already started stop too.
    let mut guard = StopOnError(vec![
        Arc::clone(&stop),
        Arc::clone(&journal_stop),
        Arc::clone(&cluster_stop),
    ]);
    if v.cluster.as_ref().is_some_and(|c| c.forwards) {
        anyhow::bail!(
            "cluster.engines names the engines an API node forwards to: run this config with `serve --role api`"
        );
    }
    let cfg = &v.config;
    let mut threads = Threads::default();
    let redis = match &v.redis {
        Some(setup) => Some(Arc::new(RedisStore::connect(setup).await?)),
        None => None,
    };
    let security = security(&v, redis.as_ref())?;

    // 1. Sources -> one input ring per feed (the feeds start once the engine runs).
    let sim = start_simulator(&v, &stop)?;
    let bells = Doorbells::default();
    let (feed_producers, inputs) = feed_rings(&v, &bells.engine);

    // 2. Input rings -> engine -> the API output ring and the store's recorder ring
    // (and the order ring -> journal).
    let (out_producer, out_consumer) = ring::<EngineEvent>("api", cfg.engine.output_ring_capacity);
    let out_producer = out_producer.waking(&bells.fanout);
    let stores = StoreRings::new(&v, redis.is_some());
    let (engine, order_path) = build_engine(&v, inputs, out_producer, stores.recorder, redis.as_ref(), &bells)?;
    let handles = engine.handles();
    let spec = AgentSpec::new("engine", cfg.engine.idle, &stop)
        .on_core(cfg.engine.core)
        .woken_by(&bells.engine);
    threads.engine = Some(spawn_agent(engine, spec).context("starting the engine thread")?);
    // The engine is built (the order journal recovered) and polls its input rings:
    // now the feeds connect, and nothing they deliver waits behind the recovery.
    threads.feeds = start_feeds(&v, &stop, sim.as_ref().map(|(a, _)| *a), feed_producers)?;
    threads.simulator = sim.map(|(_, j)| j);

    // 3. Output rings -> fan-outs. The market fan-out feeds the Redis publisher's tap.
    let mut tap_stats: Vec<_> = stores.redis.iter().map(|(p, _)| Arc::clone(p.stats())).collect();
    let (redis_tap, redis_ring) = stores.redis.unzip();
    let taps = redis_tap.into_iter().collect();
    let (market, hub, fanout, fanout_stats) = market_fanout(&v, out_consumer, taps, &stop, &bells.fanout)?;
    threads.fanout = Some(fanout);
    let registry = Arc::clone(&market.registry);
    // With [cluster], the order fan-out also hands its output to the engine link.
    let link_ring = match (&v.cluster, &order_path) {
        (Some(_), Some(_)) => Some(ring::<OrderOutput>(
            "cluster-out",
            v.orders.as_ref().map_or(1, |o| o.event_ring_capacity),
        )),
        _ => None,
    };
    let (link_producer, link_consumer) = link_ring.unzip();
    // Its drops show with the other taps' (API nodes see them as a gap and resync).
    tap_stats.extend(link_producer.as_ref().map(|p| Arc::clone(p.stats())));
    let order_service = match order_path {
        Some(path) => Some(start_order_path(
            &v,
            path,
            link_producer,
            &hub,
            &security,
            &stop,
            &journal_stop,
            &bells,
            &mut threads,
        )?),
        None => None,
    };
    let cluster_stats = match (&v.cluster, &redis, &order_service, link_consumer) {
        (Some(setup), Some(store), Some(service), Some(ring)) => {
            let stats = Arc::new(ClusterStats::default());
            let join = spawn_engine_link(
                setup.clone(),
                Arc::clone(store),
                Arc::clone(service),
                ring,
                Arc::clone(&stats),
                Arc::clone(&cluster_stop),
            )
            .context("starting the cluster engine link")?;
            threads.cluster.push(join);
            tracing::info!(node = %setup.node, "serving forwarded orders on redis streams");
            Some((stats, setup.clone()))
        }
        _ => None,
    };

    // 4. The store ring and the tap ring -> stores.
    let questdb_stats = match (&v.questdb, stores.questdb) {
        (Some(setup), Some((ring, stats))) => {
            let accounts = v.orders.as_ref().map(|o| o.accounts.clone()).unwrap_or_default();
            let journal = v
                .orders
                .as_ref()
                .zip(order_service.as_ref())
                .map(|(o, s)| (o.journal.dir.as_path(), Arc::clone(s.journal())));
            let join = crate::sink::start(
                setup,
                &v.registry,
                &accounts,
                ring,
                journal,
                Arc::clone(&stats),
                Arc::clone(&journal_stop),
            )?;
            threads.questdb = Some(join);
            Some(stats)
        }
        _ => None,
    };
    if let (Some(store), Some(ring)) = (&redis, redis_ring) {
        // Resync requests from API nodes go to the output the fan-out (and so this
        // tap) reads.
        let output = handles
            .outputs
            .first()
            .map(|o| Arc::clone(&o.1))
            .context("the API output ring")?;
        // An engine node owning some instruments publishes only theirs.
        let published = crate::redis_store::publisher::published(&registry, owned_instruments(&v).as_deref());
        let join = crate::redis_store::publisher::spawn_publisher(
            Arc::clone(store),
            Arc::clone(&registry),
            ring,
            output,
            published,
            Arc::clone(&journal_stop),
        )
        .context("starting the redis publisher")?;
        threads.redis = Some(join);
    }

    // 5. Serve.
    let feed_info = threads
        .feeds
        .iter()
        .map(|h| FeedInfo {
            name: h.name.clone(),
            kind: h.kind,
            stats: Arc::clone(&h.stats),
            ring: Arc::clone(&h.ring),
        })
        .collect();
    let state = AppState::new(
        cfg.api.clone(),
        market,
        hub,
        handles,
        fanout_stats,
        feed_info,
        cfg.engine.book_max_levels,
        order_service,
        questdb_stats,
        security,
    )
    .with_http_metrics(HttpMetrics::for_document(crate::http::router::document()));
    let state = match redis {
        Some(r) => state.with_redis(r),
        None => state,
    }
    .with_taps(tap_stats)
    .with_health(v.health.clone());
    let state = match cluster_stats {
        Some((stats, setup)) => state.with_cluster(stats, setup),
        None => state,
    };
    let (server, tx, tls) = serve(listener, &state)?;
    tracing::info!(%addr, tls = tls.is_some(), instruments = registry.len(), feeds = state.feeds.len(), "serving");
    guard.0.clear();
    Ok(RunningApp {
        addr,
        state,
        stop,
        journal_stop,
        cluster_stop,
        threads: Some(threads),
        server,
        shutdown: Some(tx),
        tls,
    })
}

/// The stores' rings. The QuestDB store keeps every trade, quote and closed bar: it
/// reads a recorder ring of its own from the engine (nothing between them that could
/// fall behind; a full ring is counted, never waited for). The Redis publisher takes
/// conflated market data: a lossy tap off the API fan-out.
struct StoreRings {
    /// The engine's end of the store's ring.
    recorder: Option<RingProducer<EngineEvent>>,
    questdb: Option<(RingConsumer<EngineEvent>, Arc<SinkStats>)>,
    redis: Option<(RingProducer<EngineEvent>, RingConsumer<EngineEvent>)>,
}

impl StoreRings {
    fn new(v: &Validated, redis: bool) -> Self {
        let (recorder, questdb) = match &v.questdb {
            Some(setup) => {
                let (p, c) = ring::<EngineEvent>("questdb", setup.ring_capacity);
                (Some(p), Some((c, Arc::new(SinkStats::default()))))
            }
            None => (None, None),
        };
        let redis = redis.then(|| ring::<EngineEvent>("redis", v.config.engine.output_ring_capacity));
        Self {
            recorder,
            questdb,
            redis,
        }
    }
}

/// The order path, built with the engine and started after it.
struct OrderPath {
    service: Arc<OrderService>,
    /// The journal's output: durable steps and events, for the order fan-out.
    ring: RingConsumer<OrderOutput>,
    journal: JournalThread,
    snapshots: Snapshotter,
}

/// The engine over the feeds' rings, publishing to `output` (and to `recorder`, the
/// store's ring, what the store keeps); with `[orders]` and
/// `[auth]` also the order path (the journal recovered into it), with `[surveillance]`
/// the surveillance rules.
fn build_engine(
    v: &Validated,
    inputs: Vec<TickConsumer>,
    output: RingProducer<EngineEvent>,
    recorder: Option<RingProducer<EngineEvent>>,
    redis: Option<&Arc<RedisStore>>,
    bells: &Doorbells,
) -> anyhow::Result<(Engine, Option<OrderPath>)> {
    let cfg = &v.config;
    // Sessions (out of session: CLOSED) and which instruments a feed delivers (the
    // others are never STALE for silence).
    let fed: Vec<stocksblitz_engine::InstrumentId> = cfg
        .feeds
        .iter()
        .flat_map(|f| f.instruments.iter())
        .filter_map(|s| v.registry.by_symbol(s).map(|i| i.id))
        .collect();
    let mut engine = Engine::new(&cfg.engine, v.registry.len(), inputs, vec![output]);
    if let Some(r) = recorder {
        engine = engine.with_output(r, OutputKind::Recorder(Table::stored));
    }
    let engine = engine.with_market(&v.registry, &fed, UnixNanos::now());
    let (Some(setup), Some(_)) = (&v.orders, &cfg.auth) else {
        return Ok((engine, None));
    };
    let queue = command_queue(setup.command_queue_capacity).waking(&bells.engine);
    let (order_out, journal_in) = ring::<OrderOutput>("order-journal", setup.event_ring_capacity);
    let order_out = order_out.waking(&bells.journal);
    let (journal_out, order_in) = ring::<OrderOutput>("orders", setup.event_ring_capacity);
    let journal_out = journal_out.waking(&bells.order_fanout);
    let mut manager = OrderManager::new(&v.registry, &setup.venues, &setup.rates, &setup.limits, setup.capacity);
    manager.set_day_roll(setup.day_roll_secs);
    // An engine node of a cluster: its shard before recovery (replay issues the
    // journaled ids again; a journal of another shard is refused), and the
    // instruments it owns (journaled by `journal::open` when they change).
    if let Some(c) = &v.cluster {
        manager.set_shard(c.shard).context("cluster.shard")?;
        manager.set_owned(owned_instruments(v).as_deref());
    }
    let mut store = OrderStore::new(setup.accounts.len(), setup.history_per_account);
    let (journal, snapshots, journal_stats) = open_journal(setup, v, &mut manager, &mut store)?;
    let now = UnixNanos::now();
    manager.republish_internal_books(now);
    let backlog = 4 * setup.event_ring_capacity;
    let mut engine = engine.with_orders(manager, OrderGateway::new(queue.clone(), order_out, backlog), now);
    if let Some(t) = &v.surveillance {
        let surveillance = Surveillance::new(t.clone(), &v.registry, setup.accounts.len());
        engine = engine.with_surveillance(surveillance);
    }
    let service = OrderService::new(
        Accounts::new(&setup.accounts),
        store,
        queue,
        std::time::Duration::from_millis(setup.response_timeout_ms),
        Arc::clone(&journal_stats),
    );
    let service = Arc::new(match redis {
        Some(r) => service.with_redis(Arc::clone(r)),
        None => service,
    });
    let journal = JournalThread::new(journal, journal_in, journal_out, journal_stats);
    Ok((
        engine,
        Some(OrderPath {
            service,
            ring: order_in,
            journal,
            snapshots,
        }),
    ))
}

/// The instruments this engine node owns (`cluster.instruments`, validated to be
/// configured); `None`: all of them (no `[cluster]`, or no list).
pub fn owned_instruments(v: &Validated) -> Option<Vec<stocksblitz_engine::InstrumentId>> {
    let list = v.cluster.as_ref()?.instruments.as_ref()?;
    Some(
        list.iter()
            .filter_map(|s| v.registry.by_symbol(s).map(|i| i.id))
            .collect(),
    )
}

/// Starts the journal (and its snapshot thread), stopped by `journal_stop` after the
/// engine, and the order fan-out behind it.
#[allow(clippy::too_many_arguments)]
fn start_order_path(
    v: &Validated,
    path: OrderPath,
    cluster: Option<RingProducer<OrderOutput>>,
    hub: &Arc<Hub>,
    security: &Security,
    stop: &Arc<AtomicBool>,
    journal_stop: &Arc<AtomicBool>,
    bells: &Doorbells,
    threads: &mut Threads,
) -> anyhow::Result<Arc<OrderService>> {
    let cfg = &v.config;
    let journal = path
        .journal
        .spawn(cfg.api.fanout_idle, Arc::clone(journal_stop), &bells.journal)
        .context("starting the journal thread")?;
    threads.journal = Some(journal);
    let snapshot_idle = v
        .orders
        .as_ref()
        .map_or(Snapshotter::DEFAULT_IDLE, |o| o.journal.snapshot_idle);
    let snapshots = path
        .snapshots
        .spawn(snapshot_idle, Arc::clone(journal_stop))
        .context("starting the journal snapshot thread")?;
    threads.snapshots = Some(snapshots);
    let join = spawn_order_fanout(
        Arc::clone(&path.service),
        Arc::clone(hub),
        Arc::clone(&security.audit),
        path.ring,
        cluster,
        AgentSpec::new("order-fanout", cfg.api.fanout_idle, stop).woken_by(&bells.order_fanout),
    )
    .context("starting the order fan-out thread")?;
    threads.order_fanout = Some(join);
    Ok(path.service)
}

/// Rebuilds the order manager and the API's read model from the journal (snapshot
/// plus replay), then opens it for this run. A damaged journal stops start-up with
/// the reason. Returns the writer and the snapshot thread (not yet started).
fn open_journal(
    setup: &OrderSetup,
    v: &Validated,
    manager: &mut OrderManager,
    store: &mut OrderStore,
) -> anyhow::Result<(JournalWriter, Snapshotter, Arc<JournalStats>)> {
    let j = &setup.journal;
    let run = RunStart {
        format: journal::FORMAT_VERSION,
        at: UnixNanos::now(),
        engine: env!("CARGO_PKG_VERSION").to_owned(),
        instruments: v.registry.len() as u32,
        accounts: setup.accounts.len() as u32,
        max_orders: setup.capacity.orders as u64,
        limits: setup.limits.clone(),
    };
    let (writer, recovered) =
        journal::open(&j.dir, j.policy, j.segment_bytes, manager, store, &run).with_context(|| {
            format!(
                "opening the order journal in {} ([orders.journal] dir)",
                j.dir.display()
            )
        })?;
    if recovered.tail.records > 0 {
        for (i, ((name, was), now)) in setup
            .accounts
            .iter()
            .zip(&recovered.limits)
            .zip(&setup.limits)
            .enumerate()
        {
            if recovered.reconfigured.iter().any(|a| a.index() == i) {
                tracing::info!(
                    account = %name,
                    "risk limits changed in the configuration since the last run: they replace the journal's"
                );
            } else if was != now {
                tracing::info!(
                    account = %name,
                    "risk limits set at run time (PUT /api/v1/admin/risk-limits) are kept: the configuration's are \
                     unchanged since the last run"
                );
            }
        }
    }
    tracing::info!(
        dir = %j.dir.display(),
        snapshot = ?recovered.snapshot,
        snapshots_skipped = recovered.skipped.len(),
        steps_replayed = recovered.steps,
        events_replayed = recovered.events,
        snapshot_load_ms = recovered.load_time.as_millis() as u64,
        replay_ms = recovered.replay_time.as_millis() as u64,
        torn_bytes = recovered.tail.torn.as_ref().map_or(0, |t| t.bytes),
        head = %journal::format::hex(writer.last_hash()),
        "order journal recovered"
    );
    let stats = Arc::new(JournalStats::default());
    // The QuestDB sink exports order events from the journal's files: retention keeps
    // what it has not stored yet (from its saved position; all of it without one).
    if let Some(q) = v.questdb.as_ref().filter(|q| q.orders) {
        let first = crate::sink::thread::saved_position(&q.spill_dir).map_or(1, |(seq, _)| seq.saturating_add(1));
        stats.export_hold.set(first);
    }
    let snapshots = Snapshotter::new(
        &j.dir,
        &recovered,
        manager.clone(),
        store.clone(),
        j.snapshot_every_records,
        j.snapshots_kept,
        Arc::clone(&stats),
    )
    .with_retention(j.retention);
    Ok((writer, snapshots, stats))
}

type MarketFanout = (Arc<Market>, Arc<Hub>, ThreadHandle, Arc<crate::market::FanoutStats>);

/// The API's read model of the market and its WebSocket hub, and the thread that
/// fills both from `ring` (the engine's output, or Redis on an API node).
fn market_fanout(
    v: &Validated,
    ring: RingConsumer<EngineEvent>,
    taps: Vec<RingProducer<EngineEvent>>,
    stop: &Arc<AtomicBool>,
    wake: &Doorbell,
) -> anyhow::Result<MarketFanout> {
    let registry = Arc::new(v.registry.clone());
    let cfg = &v.config;
    let market = Arc::new(Market {
        mirror: RwLock::new(Mirror::new(
            registry.len(),
            cfg.engine.book_max_levels,
            cfg.api.trades_history,
            cfg.api.bars_history,
        )),
        feed_of: (0..registry.len())
            .map(|i| {
                let symbol = registry
                    .get(stocksblitz_engine::InstrumentId(i as u32))
                    .map(|x| x.symbol.as_str());
                cfg.feeds
                    .iter()
                    .find(|f| symbol.is_some_and(|s| f.instruments.iter().any(|x| x == s)))
                    .map(|f| f.name.clone())
            })
            .collect(),
        registry,
    });
    let hub = Arc::new(Hub::new(
        &market.registry,
        &market.mirror.read(),
        cfg.api.ws_book_depth,
        cfg.api.ws_queue_capacity,
        cfg.api.trades_history,
    ));
    let (fanout, stats) = spawn_fanout(
        Arc::clone(&market),
        Arc::clone(&hub),
        ring,
        taps,
        cfg.api.fanout_idle,
        Arc::clone(stop),
        wake,
    )
    .context("starting the API fan-out thread")?;
    Ok((market, hub, fanout, stats))
}

type Server = tokio::task::JoinHandle<std::io::Result<()>>;

/// Token checks, rate limiter and audit log; a missing key or an unwritable audit log
/// stops start-up.
fn security(v: &Validated, redis: Option<&Arc<RedisStore>>) -> anyhow::Result<Security> {
    let auth = v
        .config
        .auth
        .as_ref()
        .map(|a| crate::auth::Authenticator::load(a, redis.cloned()).map(Arc::new))
        .transpose()?;
    let limiter = Arc::new(crate::ratelimit::RateLimiter::new(
        &v.config.rate_limits,
        redis.cloned(),
    ));
    let audit =
        crate::audit::AuditLog::start(&v.config.audit).map_err(|e| anyhow::anyhow!("audit log ([audit] path): {e}"))?;
    Ok(Security {
        auth,
        limiter,
        audit: Arc::new(audit),
    })
}

/// Serves the routes on `listener` (TLS with `[api.tls]`) until the returned sender
/// fires; with TLS, SIGHUP re-reads the certificate files.
fn serve(
    listener: TcpListener,
    state: &AppState,
) -> anyhow::Result<(Server, oneshot::Sender<()>, Option<Arc<TlsFiles>>)> {
    let tls = match &state.config.tls {
        Some(cfg) => {
            let files = Arc::new(TlsFiles::load(cfg, Arc::clone(&state.http.connections))?);
            crate::http::tls::reload_on_sighup(Arc::clone(&files)).context("installing the SIGHUP handler")?;
            Some(files)
        }
        None => None,
    };
    let (server, tx) = crate::http::server::serve(listener, state, tls.clone());
    Ok((server, tx, tls))
}

/// An API node apart from the engine (`serve --role api`): market data arrives from
/// the engine node through Redis into the same fan-out, mirror and WebSocket hub.
/// With `[cluster]` (and `[orders]`, `[auth]`) it takes orders too, forwarding them to
/// the engine node over Redis Streams and keeping a replica of its order read model
/// (`crate::cluster`); without, its order routes answer 503.
pub async fn start_api_node(v: Validated, listener: TcpListener) -> anyhow::Result<RunningApp> {
    let addr = listener.local_addr().context("reading the bound address")?;
    let Some(setup) = &v.redis else {
        anyhow::bail!("--role api needs [redis]: market data reaches API nodes through it");
    };
    if v.cluster.as_ref().is_some_and(|c| !c.forwards) {
        anyhow::bail!(
            "--role api with [cluster] needs cluster.engines: the engine nodes this API node forwards orders to"
        );
    }
    let redis = Arc::new(RedisStore::connect(setup).await?);
    let stop = Arc::new(AtomicBool::new(false));
    let cluster_stop = Arc::new(AtomicBool::new(false));
    let mut guard = StopOnError(vec![Arc::clone(&stop), Arc::clone(&cluster_stop)]);
    let cfg = &v.config;
    let security = security(&v, Some(&redis))?;
    let bells = Doorbells::default();
    let (producer, consumer) = ring::<EngineEvent>("redis-in", cfg.engine.output_ring_capacity);
    let producer = producer.waking(&bells.fanout);
    let source = Arc::new(EngineStats::default());
    let handles = EngineHandles {
        stats: Arc::clone(&source),
        inputs: Vec::new(),
        outputs: vec![(Arc::clone(producer.stats()), Arc::new(OutputStats::default()))],
        orders: None,
    };
    // 1. Source: Redis -> the ring an engine's output would be.
    let subscriber =
        crate::redis_store::subscriber::spawn_subscriber(Arc::clone(&redis), producer, source, Arc::clone(&stop))
            .context("starting the redis subscriber")?;
    // 3. Fan-out.
    let (market, hub, fanout, fanout_stats) = market_fanout(&v, consumer, Vec::new(), &stop, &bells.fanout)?;
    let mut threads = Threads {
        fanout: Some(fanout),
        redis: Some(subscriber),
        ..Threads::default()
    };
    // 6. Orders, forwarded to the engine nodes: one link (and replica) per engine.
    let mut cluster = Vec::new();
    let order_service = match (&v.cluster, &v.orders, &cfg.auth) {
        (Some(c), Some(o), Some(_)) => {
            let claims = Claims::new(c.engines.len(), Arc::clone(&market.registry));
            let remotes: Vec<Arc<RemoteEngine>> = c
                .engines
                .iter()
                .enumerate()
                .map(|(k, e)| {
                    let stats = Arc::new(ClusterStats::default());
                    cluster.push((Arc::clone(&stats), c.for_engine(e)));
                    Arc::new(RemoteEngine::new(
                        c.for_engine(e),
                        k,
                        Arc::clone(&redis),
                        stats,
                        Arc::clone(&claims),
                    ))
                })
                .collect();
            let service = OrderService::new(
                Accounts::new(&o.accounts),
                OrderStore::new(o.accounts.len(), o.history_per_account),
                command_queue(1),
                std::time::Duration::from_millis(o.response_timeout_ms),
                Arc::new(JournalStats::default()),
            )
            .with_redis(Arc::clone(&redis))
            .with_remote(
                remotes
                    .iter()
                    .map(|r| Arc::clone(r) as Arc<dyn crate::orders::forward::Forward>)
                    .collect(),
            );
            let service = Arc::new(service);
            for remote in remotes {
                let join = spawn_api_link(
                    Arc::clone(&service),
                    remote,
                    Arc::clone(&hub),
                    Arc::clone(&redis),
                    Arc::clone(&cluster_stop),
                )
                .context("starting the cluster api link")?;
                threads.cluster.push(join);
            }
            Some(service)
        }
        (Some(_), _, _) => {
            anyhow::bail!("[cluster] on an API node needs [orders] and [auth] (the accounts and tokens)")
        }
        _ => None,
    };
    let state = AppState::new(
        cfg.api.clone(),
        market,
        hub,
        handles,
        fanout_stats,
        Vec::new(),
        cfg.engine.book_max_levels,
        order_service,
        None,
        security,
    )
    .with_http_metrics(HttpMetrics::for_document(crate::http::router::document()))
    .with_redis(redis)
    .with_health(v.health.clone())
    .as_api_node();
    let state = cluster
        .into_iter()
        .fold(state, |state, (stats, setup)| state.with_cluster(stats, setup));
    let (server, tx, tls) = serve(listener, &state)?;
    tracing::info!(%addr, tls = tls.is_some(), role = "api", orders = state.desk.orders.is_some(), "serving from redis");
    guard.0.clear();
    Ok(RunningApp {
        addr,
        state,
        stop,
        journal_stop: Arc::new(AtomicBool::new(false)),
        cluster_stop,
        threads: Some(threads),
        server,
        shutdown: Some(tx),
        tls,
    })
}

async fn bind(v: &Validated) -> anyhow::Result<TcpListener> {
    TcpListener::bind(v.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (api.listen): is another process using it?",
            v.listen
        )
    })
}

/// Binds the configured address and starts.
pub async fn start(v: Validated) -> anyhow::Result<RunningApp> {
    let listener = bind(&v).await?;
    start_on(v, listener).await
}

/// Binds the configured address and starts an API node.
pub async fn start_api_node_bound(v: Validated) -> anyhow::Result<RunningApp> {
    let listener = bind(&v).await?;
    start_api_node(v, listener).await
}

impl RunningApp {
    /// Re-reads the TLS certificate files now (what SIGHUP does); `Ok(false)` when the
    /// server does not serve TLS. On error the previous certificate stays in use.
    pub fn reload_tls(&self) -> Result<bool, crate::http::tls::TlsError> {
        match &self.tls {
            Some(t) => t.reload().map(|()| true),
            None => Ok(false),
        }
    }

    /// Stops serving, then stops and joins every thread.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let served = (&mut self.server).await;
        let (stop, journal_stop, cluster_stop) = (
            Arc::clone(&self.stop),
            Arc::clone(&self.journal_stop),
            Arc::clone(&self.cluster_stop),
        );
        if let Some(threads) = self.threads.take() {
            tokio::task::spawn_blocking(move || threads.stop_and_join(&stop, &journal_stop, &cluster_stop))
                .await
                .context("joining threads")?;
        }
        served.context("server task")?.context("server")?;
        Ok(())
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.journal_stop.store(true, Ordering::Release);
        self.cluster_stop.store(true, Ordering::Release);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
