//! Cross-field checks that types alone cannot express: every instrument a feed names
//! exists, each instrument has one feed, cores exist, sizes are sane.

use std::collections::HashSet;
use std::net::SocketAddr;

use stocksblitz_engine::affinity::check_core;
use stocksblitz_engine::{InstrumentRegistry, Price};
use stocksblitz_feed_handlers::FeedKind;

use super::error::range;
use super::{ApiConfig, Config, ConfigError, Environment};

/// A configuration that passed every check, with what was derived from it.
#[derive(Debug, Clone)]
pub struct Validated {
    pub config: Config,
    pub registry: InstrumentRegistry,
    pub listen: SocketAddr,
    /// Order entry, when `[orders]` is configured.
    pub orders: Option<super::orders::OrderSetup>,
    /// Surveillance thresholds, when `[surveillance]` is configured.
    pub surveillance: Option<stocksblitz_engine::surveillance::Thresholds>,
    /// The QuestDB sink, when `[questdb]` is configured.
    pub questdb: Option<super::questdb::QuestDbSetup>,
    /// Redis, when `[redis]` is configured.
    pub redis: Option<super::redis::RedisSetup>,
    /// Order streams through Redis, when `[cluster]` is configured.
    pub cluster: Option<super::cluster::ClusterSetup>,
    /// The readiness rule (`[health]`).
    pub health: super::health::HealthRule,
}

fn core(key: String, core: Option<usize>) -> Result<(), ConfigError> {
    match core {
        Some(c) => check_core(c).map_err(|e| ConfigError::invalid(key, format!("{e}; remove the key to run unpinned"))),
        None => Ok(()),
    }
}

/// Each allowed origin is exactly what browsers send in `Origin`: scheme, host and
/// optional port, no path. "*" (any origin) is for development only.
fn cors(a: &ApiConfig) -> Result<(), ConfigError> {
    for (i, o) in a.cors_allowed_origins.iter().enumerate() {
        let key = format!("api.cors_allowed_origins[{i}]");
        if o == "*" {
            if a.environment == Environment::Production {
                return Err(ConfigError::invalid(
                    key,
                    "\"*\" is refused in production: list the origins",
                ));
            }
            continue;
        }
        let rest = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
        let ok = rest
            .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)));
        if !ok {
            return Err(ConfigError::invalid(
                key,
                format!("{o:?} is not an origin: scheme://host[:port], no path or trailing slash"),
            ));
        }
    }
    Ok(())
}

pub fn validate(config: Config) -> Result<Validated, ConfigError> {
    let listen = config.listen_addr()?;
    let a = &config.api;
    range("api.ws_queue_capacity", a.ws_queue_capacity as u64, 1, 1_000_000)?;
    range(
        "api.ws_private_queue_capacity",
        a.ws_private_queue_capacity as u64,
        1,
        1_000_000,
    )?;
    range("api.ws_heartbeat_secs", a.ws_heartbeat_secs, 1, 3_600)?;
    range("api.ws_idle_timeout_secs", a.ws_idle_timeout_secs, 1, 86_400)?;
    if a.ws_idle_timeout_secs <= a.ws_heartbeat_secs {
        return Err(ConfigError::invalid(
            "api.ws_idle_timeout_secs",
            "must be longer than api.ws_heartbeat_secs, or healthy clients are cut off",
        ));
    }
    range("api.ws_flushes_per_sec", a.ws_flushes_per_sec, 1_000, 100_000_000)?;
    range("api.ws_max_flush_interval_ms", a.ws_max_flush_interval_ms, 1, 1_000)?;
    range("api.ws_max_queue_lag_ms", a.ws_max_queue_lag_ms, 1, 600_000)?;
    range("api.ws_max_client_lag_ms", a.ws_max_client_lag_ms, 0, 60_000)?;
    if a.ws_send_buffer_bytes != 0 {
        range(
            "api.ws_send_buffer_bytes",
            a.ws_send_buffer_bytes as u64,
            4_096,
            64 << 20,
        )?;
    }
    range("api.ws_book_depth", a.ws_book_depth as u64, 1, 1_000)?;
    range("api.ws_max_subscriptions", a.ws_max_subscriptions as u64, 1, 100_000)?;
    range("api.trades_history", a.trades_history as u64, 1, 1_000_000)?;
    range("api.bars_history", a.bars_history as u64, 1, 1_000_000)?;
    range("api.request_timeout_ms", a.request_timeout_ms, 1, 600_000)?;
    range("api.max_body_bytes", a.max_body_bytes as u64, 1, 64 << 20)?;
    if let Err((k, m)) = a.fanout_idle.validate() {
        return Err(ConfigError::invalid(format!("api.fanout_idle.{k}"), m));
    }
    cors(a)?;
    super::connections::check(a, listen)?;
    super::limits::check(&config.rate_limits)?;
    super::audit::check(&config.audit)?;
    if let (Environment::Production, Some(auth)) = (a.environment, &config.auth) {
        if auth.algorithm == super::auth::JwtAlgorithm::HS256 {
            return Err(ConfigError::invalid(
                "auth.algorithm",
                "production needs RS256 or EdDSA (a shared HS256 secret is for development)",
            ));
        }
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&config.log.level) {
        return Err(ConfigError::invalid("log.level", format!("not a valid filter: {e}")));
    }
    if let Err((k, m)) = config.engine.validate() {
        return Err(ConfigError::invalid(format!("engine.{k}"), m));
    }
    core("engine.core".into(), config.engine.core)?;
    let registry = config.registry()?;

    if config.feeds.is_empty() {
        return Err(ConfigError::invalid(
            "feeds",
            "at least one [[feeds]] entry is required",
        ));
    }
    let mut names = HashSet::new();
    let mut fed = HashSet::new();
    for (i, f) in config.feeds.iter().enumerate() {
        let key = |k: &str| format!("feeds[{i}].{k}");
        if f.name.is_empty()
            || !f
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::invalid(
                key("name"),
                "must be non-empty: letters, digits, '-' or '_'",
            ));
        }
        if !names.insert(f.name.as_str()) {
            return Err(ConfigError::invalid(
                key("name"),
                format!("{:?} is used twice: feed names must be unique", f.name),
            ));
        }
        core(key("core"), f.core)?;
        if let Err((k, m)) = f.idle.validate() {
            return Err(ConfigError::invalid(key(&format!("idle.{k}")), m));
        }
        if f.instruments.is_empty() {
            return Err(ConfigError::invalid(
                key("instruments"),
                "must list at least one symbol",
            ));
        }
        for sym in &f.instruments {
            if registry.by_symbol(sym).is_none() {
                return Err(ConfigError::invalid(
                    key("instruments"),
                    format!("{sym:?} is not in [[instruments]]"),
                ));
            }
            if !fed.insert(sym.as_str()) {
                return Err(ConfigError::invalid(
                    key("instruments"),
                    format!("{sym:?} is already published by another feed: one feed per instrument"),
                ));
            }
        }
        if let Some(venue) = f.kind.venue() {
            let Some(live) = &f.live else {
                return Err(ConfigError::invalid(
                    key("live"),
                    format!("required when kind = {:?}", f.kind.as_str()),
                ));
            };
            if let Err((k, m)) = live.validate() {
                return Err(ConfigError::invalid(key(&format!("live.{k}")), m));
            }
            for (param, var) in &live.auth_query {
                if let Err(e) = crate::foundation::secrets::from_env(var) {
                    return Err(ConfigError::invalid(key(&format!("live.auth_query.{param}")), e));
                }
            }
            if live.uses_simulator() && !config.simulator.as_ref().is_some_and(|s| s.enabled) {
                return Err(ConfigError::invalid(
                    key("live.ws_url"),
                    "names {simulator} but [simulator] is not enabled",
                ));
            }
            // What this venue needs of its [feeds.live] and its instruments.
            if let Err((k, m)) = venue.protocol().check_live(live) {
                return Err(ConfigError::invalid(key(&format!("live.{k}")), m));
            }
            for sym in &f.instruments {
                if let Some(inst) = registry.by_symbol(sym) {
                    if !venue.serves(&inst.venue) {
                        return Err(ConfigError::invalid(
                            key("instruments"),
                            format!(
                                "{sym:?} trades on {:?}, which a {} feed does not serve",
                                inst.venue,
                                venue.as_str()
                            ),
                        ));
                    }
                    if let Err((k, m)) = venue.protocol().check_instrument(inst) {
                        return Err(ConfigError::invalid(format!("instruments[{}].{k}", inst.id.0), m));
                    }
                }
            }
            if f.synthetic.is_some() {
                return Err(ConfigError::invalid(key("synthetic"), "only for kind = \"synthetic\""));
            }
        }
        match f.kind {
            FeedKind::Live(_) => {}
            FeedKind::Replay => {
                let Some(r) = &f.replay else {
                    return Err(ConfigError::invalid(key("replay"), "required when kind = \"replay\""));
                };
                if let Err((k, m)) = r.validate() {
                    return Err(ConfigError::invalid(key(&format!("replay.{k}")), m));
                }
                for sym in &f.instruments {
                    if let Some(inst) = registry.by_symbol(sym) {
                        if !r.venue.serves(&inst.venue) {
                            return Err(ConfigError::invalid(
                                key("instruments"),
                                format!(
                                    "{sym:?} trades on {:?}, not in a {} capture",
                                    inst.venue,
                                    r.venue.as_str()
                                ),
                            ));
                        }
                    }
                }
            }
            FeedKind::Synthetic => {
                let Some(s) = &f.synthetic else {
                    return Err(ConfigError::invalid(
                        key("synthetic"),
                        "required when kind = \"synthetic\"",
                    ));
                };
                if let Err((k, m)) = s.validate() {
                    return Err(ConfigError::invalid(key(&format!("synthetic.{k}")), m));
                }
                for sym in &f.instruments {
                    let Some(inst) = registry.by_symbol(sym) else { continue };
                    let k = key(&format!("synthetic.start_prices.{sym}"));
                    let Some(text) = s.start_prices.get(sym) else {
                        return Err(ConfigError::invalid(
                            k,
                            "missing: every instrument of the feed needs a start price",
                        ));
                    };
                    match Price::parse_str(text, inst.price_scale) {
                        Ok(p) if p.0 > 0 => {}
                        Ok(_) => return Err(ConfigError::invalid(k, "must be greater than zero")),
                        Err(e) => return Err(ConfigError::invalid(k, e.to_string())),
                    }
                }
                if let Some(extra) = s.start_prices.keys().find(|k| !f.instruments.contains(k)) {
                    return Err(ConfigError::invalid(
                        key(&format!("synthetic.start_prices.{extra}")),
                        "names a symbol this feed does not publish",
                    ));
                }
            }
        }
    }
    if let Some(sim) = config.simulator.as_ref().filter(|s| s.enabled) {
        sim.listen.parse::<SocketAddr>().map_err(|_| {
            ConfigError::invalid(
                "simulator.listen",
                format!("{:?} is not an IP:port address", sim.listen),
            )
        })?;
        stocksblitz_feed_handlers::sim::setup_from(&registry, sim)
            .map_err(|e| ConfigError::invalid(e.key, e.message))?;
    }
    let orders = match &config.orders {
        Some(o) => {
            let Some(auth) = &config.auth else {
                return Err(ConfigError::invalid(
                    "auth",
                    "[auth] is required when [orders] is configured",
                ));
            };
            let setup = super::orders::setup(o, &registry)?;
            super::auth::check(auth, &setup.accounts)?;
            for (i, f) in config.feeds.iter().enumerate() {
                for sym in &f.instruments {
                    let internal = registry
                        .by_symbol(sym)
                        .and_then(|inst| setup.venues.get(inst.id.index()))
                        .is_some_and(|v| *v == stocksblitz_engine::orders::VenueKind::Internal);
                    if internal {
                        return Err(ConfigError::invalid(
                            format!("feeds[{i}].instruments"),
                            format!("{sym:?} trades on the internal venue, whose market data is its own book: no feed may publish it"),
                        ));
                    }
                }
            }
            Some(setup)
        }
        None => None,
    };
    let surveillance = match (&config.surveillance, &orders) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(ConfigError::invalid(
                "surveillance",
                "[surveillance] needs [orders]: its actions act on accounts through the order path",
            ))
        }
        (Some(c), Some(_)) => Some(
            c.thresholds()
                .map_err(|(k, m)| ConfigError::invalid(format!("surveillance.{k}"), m))?,
        ),
    };
    let questdb = config
        .questdb
        .as_ref()
        .map(|q| super::questdb::setup(q, orders.is_some()))
        .transpose()?;
    let redis = config.redis.as_ref().map(super::redis::setup).transpose()?;
    let cluster = config
        .cluster
        .as_ref()
        .map(|c| {
            let all: Vec<(String, u32)> = registry.iter().map(|i| (i.symbol.to_string(), i.id.0)).collect();
            super::cluster::setup(c, redis.is_some(), orders.is_some(), &all)
        })
        .transpose()?;
    let health = super::health::check(&config.health)?;
    Ok(Validated {
        config,
        registry,
        listen,
        orders,
        surveillance,
        questdb,
        redis,
        cluster,
        health,
    })
}
