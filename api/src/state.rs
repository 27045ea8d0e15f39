//! Shared state of the API: everything a handler or a WebSocket session may read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use stocksblitz_engine::ring::RingStats;
use stocksblitz_engine::EngineHandles;
use stocksblitz_feed_handlers::FeedStats;

use crate::config::ApiConfig;
use crate::http::metrics::HttpMetrics;
use crate::market::{FanoutStats, Market};
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
    pub config: ApiConfig,
    pub market: Arc<Market>,
    pub hub: Arc<Hub>,
    pub engine: EngineHandles,
    pub fanout: Arc<FanoutStats>,
    pub feeds: Vec<FeedInfo>,
    pub http: HttpMetrics,
    pub book_max_levels: usize,
    pub started: Instant,
    /// Order entry, when `[orders]` is configured.
    pub orders: Option<Arc<crate::orders::OrderService>>,
    /// The QuestDB sink's counters, when `[questdb]` is configured.
    pub questdb: Option<Arc<crate::sink::SinkStats>>,
    /// Redis, when `[redis]` is configured.
    pub redis: Option<Arc<crate::redis_store::RedisStore>>,
    /// An API node (`serve --role api`): market data comes from Redis, not an engine.
    pub api_node: bool,
    /// The stores' rings off the API fan-out (QuestDB sink, Redis publisher).
    pub taps: Vec<Arc<RingStats>>,
    /// Token and signature checks, when `[auth]` is configured.
    pub auth: Option<Arc<crate::auth::Authenticator>>,
    pub limiter: Arc<crate::ratelimit::RateLimiter>,
    pub audit: Arc<crate::audit::AuditLog>,
    /// The readiness rule (`[health]`).
    pub health: crate::config::health::HealthRule,
    next_conn: AtomicU64,
}

/// Who may call and what is recorded: built at start-up from `[auth]`,
/// `[rate_limits]` and `[audit]`.
pub struct Security {
    pub auth: Option<Arc<crate::auth::Authenticator>>,
    pub limiter: Arc<crate::ratelimit::RateLimiter>,
    pub audit: Arc<crate::audit::AuditLog>,
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
        orders: Option<Arc<crate::orders::OrderService>>,
        questdb: Option<Arc<crate::sink::SinkStats>>,
        security: Security,
    ) -> Self {
        Self(Arc::new(Inner {
            config,
            market,
            hub,
            engine,
            fanout,
            feeds,
            http: HttpMetrics::default(),
            book_max_levels,
            started: Instant::now(),
            orders,
            questdb,
            redis: None,
            api_node: false,
            taps: Vec::new(),
            auth: security.auth,
            limiter: security.limiter,
            audit: security.audit,
            health: crate::config::health::HealthRule::default(),
            next_conn: AtomicU64::new(1),
        }))
    }

    /// Adds Redis (before the state is shared).
    pub fn with_redis(mut self, redis: Arc<crate::redis_store::RedisStore>) -> Self {
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
    pub fn with_health(mut self, rule: crate::config::health::HealthRule) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.health = rule;
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
