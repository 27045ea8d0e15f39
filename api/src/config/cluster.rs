//! `[cluster]`: order entry through API nodes over Redis Streams (SPEC sections 5-7).
//!
//! An engine node with `[cluster]` reads the commands API nodes forward on its command
//! stream and publishes its journaled order output, and the answers, on its output
//! stream; `shard` and `instruments` say which order ids and which instruments are
//! its own when there is more than one engine. An API node (`serve --role api`) with
//! `[cluster]` forwards its order requests to the engines named by `cluster.engines`
//! (by symbol, to the engine that owns the instrument) and keeps a replica of each
//! engine's order read model from its output stream. Absent: no streams; an API node
//! then serves market data only.

use serde::Deserialize;

use super::error::{range, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This process's name in the cluster: unique per node. An engine node's streams
    /// are named after it; an API node's replies are routed by it.
    pub node: String,
    /// (API nodes) the engine nodes this node forwards orders to; absent on an engine
    /// node.
    #[serde(default)]
    pub engines: Vec<String>,
    /// (Engine nodes) this engine's number, unique among the engines of a cluster
    /// (0-254): the top 8 bits of its order and fill ids, so ids never collide across
    /// engines. 0 keeps a single engine's ids as they always were.
    #[serde(default)]
    pub shard: u8,
    /// (Engine nodes) the symbols (from `[[instruments]]`) whose orders this engine
    /// takes and whose market data it publishes; absent: all of them. Every node lists
    /// the same `[[instruments]]`.
    #[serde(default)]
    pub instruments: Option<Vec<String>>,
    /// Approximate length the command stream is trimmed to (`XADD MAXLEN ~`).
    pub command_stream_len: u64,
    /// Approximate length the output stream (order output and answers) is trimmed to.
    /// An API node further behind than this resynchronizes from a snapshot.
    pub output_stream_len: u64,
    /// (Engine nodes) order output held in memory while Redis is unreachable; past it
    /// the output is dropped and API nodes resynchronize from a snapshot once Redis is
    /// back (counted).
    pub output_backlog: usize,
}

/// What an engine node owns, as it announces it on its output stream: API nodes route
/// orders by it and check that their instrument ids mean the same instruments.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    /// The top 8 bits of the engine's order and fill ids.
    pub shard: u8,
    /// The symbols it takes orders for, with their instrument ids.
    pub instruments: Vec<(String, u32)>,
}

/// `[cluster]`, checked.
#[derive(Debug, Clone)]
pub struct ClusterSetup {
    pub node: String,
    /// The engine whose streams this node uses: its own name on an engine node, one
    /// of `engines` in an API node's link to it ([`ClusterSetup::for_engine`]).
    pub engine: String,
    /// (API nodes) every engine this node forwards to, in configuration order.
    pub engines: Vec<String>,
    /// Whether this node is an API node forwarding to `engines`.
    pub forwards: bool,
    /// (Engine nodes) the top 8 bits of this engine's order and fill ids.
    pub shard: u8,
    /// (Engine nodes) the symbols this engine owns; `None`: all.
    pub instruments: Option<Vec<String>>,
    /// (Engine nodes) what this engine announces to API nodes: its shard, and the
    /// symbols and instrument ids it owns.
    pub owner: Owner,
    pub command_stream_len: u64,
    pub output_stream_len: u64,
    pub output_backlog: usize,
}

fn name(key: &str, v: &str) -> Result<(), ConfigError> {
    if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ConfigError::invalid(key, format!("{v:?}: 1 to 64 of A-Z a-z 0-9 - _")));
    }
    Ok(())
}

/// Checks `[cluster]` against the rest: it needs `[redis]` (the streams) and
/// `[orders]` (the accounts and the answer timeout).
pub fn setup(
    c: &ClusterConfig,
    redis: bool,
    orders: bool,
    registry: &[(String, u32)],
) -> Result<ClusterSetup, ConfigError> {
    let known = |sym: &str| registry.iter().any(|(s, _)| s == sym);
    name("cluster.node", &c.node)?;
    for (i, e) in c.engines.iter().enumerate() {
        name("cluster.engines", e)?;
        if c.engines[..i].contains(e) {
            return Err(ConfigError::invalid(
                "cluster.engines",
                format!("{e:?} is listed twice"),
            ));
        }
    }
    if !c.engines.is_empty() && (c.shard != 0 || c.instruments.is_some()) {
        return Err(ConfigError::invalid(
            "cluster",
            "shard and instruments belong to an engine node's [cluster]; an API node (engines = [...]) learns them \
             from each engine",
        ));
    }
    if let Some(list) = &c.instruments {
        if list.is_empty() {
            return Err(ConfigError::invalid(
                "cluster.instruments",
                "an engine must own at least one instrument (leave it out to own them all)",
            ));
        }
        for (i, sym) in list.iter().enumerate() {
            if !known(sym) {
                return Err(ConfigError::invalid(
                    "cluster.instruments",
                    format!("{sym:?} is not in [[instruments]]"),
                ));
            }
            if list[..i].contains(sym) {
                return Err(ConfigError::invalid(
                    "cluster.instruments",
                    format!("{sym:?} is listed twice"),
                ));
            }
        }
    }
    if !redis {
        return Err(ConfigError::invalid(
            "cluster",
            "[cluster] needs [redis]: the order streams live there",
        ));
    }
    if !orders {
        return Err(ConfigError::invalid(
            "cluster",
            "[cluster] needs [orders]: the accounts and response_timeout_ms apply on every node",
        ));
    }
    range("cluster.command_stream_len", c.command_stream_len, 1_000, 100_000_000)?;
    range("cluster.output_stream_len", c.output_stream_len, 1_000, 100_000_000)?;
    range("cluster.output_backlog", c.output_backlog as u64, 1_000, 100_000_000)?;
    // 255 would let the very last id of a full pool equal the books' "no order" marker.
    range("cluster.shard", u64::from(c.shard), 0, 254)?;
    Ok(ClusterSetup {
        node: c.node.clone(),
        engine: c.engines.first().unwrap_or(&c.node).clone(),
        engines: c.engines.clone(),
        forwards: !c.engines.is_empty(),
        shard: c.shard,
        instruments: c.instruments.clone(),
        owner: Owner {
            shard: c.shard,
            instruments: registry
                .iter()
                .filter(|(s, _)| c.instruments.as_ref().is_none_or(|l| l.contains(s)))
                .cloned()
                .collect(),
        },
        command_stream_len: c.command_stream_len,
        output_stream_len: c.output_stream_len,
        output_backlog: c.output_backlog,
    })
}

impl ClusterSetup {
    /// An API node's setup for its link to `engine`.
    pub fn for_engine(&self, engine: &str) -> ClusterSetup {
        ClusterSetup {
            engine: engine.to_owned(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(node: &str, engine: Option<&str>) -> ClusterConfig {
        ClusterConfig {
            node: node.into(),
            engines: engine.map(|e| vec![e.to_owned()]).unwrap_or_default(),
            shard: 0,
            instruments: None,
            command_stream_len: 10_000,
            output_stream_len: 10_000,
            output_backlog: 10_000,
        }
    }

    fn setup_(c: &ClusterConfig, redis: bool, orders: bool) -> Result<ClusterSetup, ConfigError> {
        setup(c, redis, orders, &[("BTCUSDT".into(), 0), ("ETHUSDT".into(), 1)])
    }

    fn key(r: Result<ClusterSetup, ConfigError>) -> String {
        match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn roles_names_dependencies_and_bounds_are_checked() {
        let engine = setup_(&cfg("engine-1", None), true, true).expect("engine node");
        assert_eq!((engine.engine.as_str(), engine.forwards), ("engine-1", false));
        let api = setup_(&cfg("api-1", Some("engine-1")), true, true).expect("api node");
        assert_eq!((api.engine.as_str(), api.forwards), ("engine-1", true));
        for bad in ["", "has space", "a:b", &"x".repeat(65)] {
            assert_eq!(key(setup_(&cfg(bad, None), true, true)), "cluster.node", "{bad:?}");
            assert_eq!(
                key(setup_(&cfg("n", Some(bad)), true, true)),
                "cluster.engines",
                "{bad:?}"
            );
        }
        assert_eq!(key(setup_(&cfg("n", None), false, true)), "cluster");
        assert_eq!(key(setup_(&cfg("n", None), true, false)), "cluster");
        let mut c = cfg("n", None);
        c.output_stream_len = 10;
        assert_eq!(key(setup_(&c, true, true)), "cluster.output_stream_len");
        let mut c = cfg("n", None);
        c.output_backlog = 0;
        assert_eq!(key(setup_(&c, true, true)), "cluster.output_backlog");
        // Engines listed twice; shard and instruments only on engine nodes, known, once.
        let mut c = cfg("api", Some("e1"));
        c.engines.push("e1".into());
        assert_eq!(key(setup_(&c, true, true)), "cluster.engines");
        let mut c = cfg("api", Some("e1"));
        c.shard = 1;
        assert_eq!(key(setup_(&c, true, true)), "cluster");
        let mut c = cfg("e1", None);
        c.shard = 255;
        assert_eq!(key(setup_(&c, true, true)), "cluster.shard");
        c.shard = 7;
        for (list, ok) in [
            (vec!["BTCUSDT"], true),
            (vec![], false),
            (vec!["NOPE"], false),
            (vec!["BTCUSDT", "BTCUSDT"], false),
        ] {
            c.instruments = Some(list.iter().map(|s| s.to_string()).collect());
            let r = setup_(&c, true, true);
            if ok {
                let s = r.expect("valid");
                assert_eq!((s.shard, s.instruments.as_deref().map(<[String]>::len)), (7, Some(1)));
                assert_eq!(s.owner.instruments, vec![("BTCUSDT".to_owned(), 0)]);
                assert_eq!(s.owner.shard, 7);
            } else {
                assert_eq!(key(r), "cluster.instruments", "{list:?}");
            }
        }
        let api = setup_(
            &ClusterConfig {
                engines: vec!["e1".into(), "e2".into()],
                ..cfg("api", None)
            },
            true,
            true,
        )
        .expect("two engines");
        assert_eq!(api.for_engine("e2").engine, "e2");
        assert_eq!(api.engine, "e1");
        let all = setup_(&cfg("e1", None), true, true).expect("engine");
        assert_eq!(all.owner.instruments.len(), 2, "no list: owns every instrument");
    }
}
