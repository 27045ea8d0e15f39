//! The shared state of the API, composed of the parts each layer needs: [`Access`]
//! (who may call, rate limits, audit) for the middlewares, [`Desk`] (order service and
//! instruments) for order entry, the HTTP counters for the request-id and metrics
//! middlewares, and the rest (feeds, engine counters, stores, readiness rule) for
//! health and `/metrics`. Handlers take the smallest part that serves them (axum
//! `FromRef`); only the wiring, health, metrics and the WebSocket session see the whole.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRef;
use stocksblitz_engine::ring::RingStats;
use stocksblitz_engine::EngineHandles;
use stocksblitz_feed_handlers::FeedStats;

use crate::audit::AuditLog;
use crate::auth::{Access, Authenticator};
use crate::cluster::ClusterStats;
use crate::config::cluster::ClusterSetup;
use crate::config::health::HealthRule;
use crate::config::ApiConfig;
use crate::http::metrics::counters::HttpMetrics;
use crate::market::{FanoutStats, Market};
use crate::orders::{Desk, OrderService};
use crate::ratelimit::RateLimiter;
use crate::redis_store::RedisStore;
use crate::sink::SinkStats;
use crate::ws::hub::Hub;

/// A feed as the API reports it.
pub struct FeedInfo {
    pub name: String,
    pub kind: &'static str,
    pub stats: Arc<FeedStats>,
    pub ring: Arc<RingStats>,
}

impl FeedInfo {
    /// Whether the feed connects to a venue (its state then says whether it is
    /// connected); synthetic and replay feeds are connected while they run.
    pub fn state(&self) -> stocksblitz_feed_handlers::FeedState {
        self.stats.state()
    }
}

pub struct Inner {
    pub config: Arc<ApiConfig>,
    pub access: Access,
    pub desk: Desk,
    pub hub: Arc<Hub>,
    pub engine: EngineHandles,
    pub fanout: Arc<FanoutStats>,
    pub feeds: Vec<FeedInfo>,
    pub http: Arc<HttpMetrics>,
    pub book_max_levels: usize,
    pub started: Instant,
    /// The QuestDB sink's counters, when `[questdb]` is configured.
    pub questdb: Option<Arc<SinkStats>>,
    /// Redis, when `[redis]` is configured.
    pub redis: Option<Arc<RedisStore>>,
    /// An API node (`serve --role api`): market data comes from Redis, not an engine.
    pub api_node: bool,
    /// The order streams' counters, with `[cluster]` (this node's name and role): the
    /// engine node's link, or an API node's link to each engine.
    pub cluster: Vec<(Arc<ClusterStats>, ClusterSetup)>,
    /// The stores' rings off the API fan-out (QuestDB sink, Redis publisher).
    pub taps: Vec<Arc<RingStats>>,
    /// The readiness rule (`[health]`).
    pub health: HealthRule,
    next_conn: AtomicU64,
}

/// Who may call and what is recorded: built at start-up from `[auth]`,
/// `[rate_limits]` and `[audit]`.
pub struct Security {
    pub auth: Option<Arc<Authenticator>>,
    pub limiter: Arc<RateLimiter>,
    pub audit: Arc<AuditLog>,
}

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl FromRef<AppState> for Access {
    fn from_ref(app: &AppState) -> Self {
        app.access.clone()
    }
}

impl FromRef<AppState> for Desk {
    fn from_ref(app: &AppState) -> Self {
        app.desk.clone()
    }
}

impl FromRef<AppState> for Arc<AuditLog> {
    fn from_ref(app: &AppState) -> Self {
        Arc::clone(&app.access.audit)
    }
}

impl FromRef<AppState> for Arc<HttpMetrics> {
    fn from_ref(app: &AppState) -> Self {
        Arc::clone(&app.http)
    }
}

impl FromRef<AppState> for Arc<ApiConfig> {
    fn from_ref(app: &AppState) -> Self {
        Arc::clone(&app.config)
    }
}

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: ApiConfig,
        market: Arc<Market>,
        hub: Arc<Hub>,
        engine: EngineHandles,
        fanout: Arc<FanoutStats>,
        feeds: Vec<FeedInfo>,
        book_max_levels: usize,
        orders: Option<Arc<OrderService>>,
        questdb: Option<Arc<SinkStats>>,
        security: Security,
    ) -> Self {
        let config = Arc::new(config);
        Self(Arc::new(Inner {
            access: Access {
                auth: security.auth,
                limiter: security.limiter,
                audit: security.audit,
                config: Arc::clone(&config),
            },
            desk: Desk { market, orders },
            config,
            hub,
            engine,
            fanout,
            feeds,
            http: Arc::new(HttpMetrics::default()),
            book_max_levels,
            started: Instant::now(),
            questdb,
            redis: None,
            api_node: false,
            cluster: Vec::new(),
            taps: Vec::new(),
            health: HealthRule::default(),
            next_conn: AtomicU64::new(1),
        }))
    }

    /// The HTTP layer's counters, with a row for every route the router serves (built
    /// by the wiring, which knows the router; before the state is shared).
    pub fn with_http_metrics(mut self, http: HttpMetrics) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.http = Arc::new(http);
        }
        self
    }

    /// Adds Redis (before the state is shared).
    pub fn with_redis(mut self, redis: Arc<RedisStore>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.redis = Some(redis);
        }
        self
    }

    /// Adds the fan-out's tap rings (before the state is shared).
    pub fn with_taps(mut self, taps: Vec<Arc<RingStats>>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.taps = taps;
        }
        self
    }

    /// Sets the readiness rule (before the state is shared).
    pub fn with_health(mut self, rule: HealthRule) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.health = rule;
        }
        self
    }

    /// Adds one order stream link's counters (before the state is shared).
    pub fn with_cluster(mut self, stats: Arc<ClusterStats>, setup: ClusterSetup) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.cluster.push((stats, setup));
        }
        self
    }

    /// Marks the state as an API node's (before it is shared).
    pub fn as_api_node(mut self) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.api_node = true;
        }
        self
    }

    pub fn next_connection_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}
