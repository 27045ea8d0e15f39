//! `[cluster]`: order entry through API nodes over Redis Streams (SPEC sections 5-7).
//!
//! An engine node with `[cluster]` reads the commands API nodes forward on its command
//! stream and publishes its journaled order output, and the answers, on its output
//! stream. An API node (`serve --role api`) with `[cluster]` forwards its order
//! requests to the engine named by `cluster.engine` and keeps a replica of the order
//! read model from that engine's output stream. Absent: no streams; an API node then
//! serves market data only.

use serde::Deserialize;

use super::error::{range, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This process's name in the cluster: unique per node. An engine node's streams
    /// are named after it; an API node's replies are routed by it.
    pub node: String,
    /// (API nodes) the engine node that owns the orders; absent on an engine node.
    #[serde(default)]
    pub engine: Option<String>,
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

/// `[cluster]`, checked.
#[derive(Debug, Clone)]
pub struct ClusterSetup {
    pub node: String,
    /// The engine whose streams this node uses (its own name on an engine node).
    pub engine: String,
    /// Whether this node is an API node forwarding to `engine`.
    pub forwards: bool,
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
pub fn setup(c: &ClusterConfig, redis: bool, orders: bool) -> Result<ClusterSetup, ConfigError> {
    name("cluster.node", &c.node)?;
    if let Some(e) = &c.engine {
        name("cluster.engine", e)?;
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
    Ok(ClusterSetup {
        node: c.node.clone(),
        engine: c.engine.clone().unwrap_or_else(|| c.node.clone()),
        forwards: c.engine.is_some(),
        command_stream_len: c.command_stream_len,
        output_stream_len: c.output_stream_len,
        output_backlog: c.output_backlog,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(node: &str, engine: Option<&str>) -> ClusterConfig {
        ClusterConfig {
            node: node.into(),
            engine: engine.map(Into::into),
            command_stream_len: 10_000,
            output_stream_len: 10_000,
            output_backlog: 10_000,
        }
    }

    fn key(r: Result<ClusterSetup, ConfigError>) -> String {
        match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn roles_names_dependencies_and_bounds_are_checked() {
        let engine = setup(&cfg("engine-1", None), true, true).expect("engine node");
        assert_eq!((engine.engine.as_str(), engine.forwards), ("engine-1", false));
        let api = setup(&cfg("api-1", Some("engine-1")), true, true).expect("api node");
        assert_eq!((api.engine.as_str(), api.forwards), ("engine-1", true));
        for bad in ["", "has space", "a:b", &"x".repeat(65)] {
            assert_eq!(key(setup(&cfg(bad, None), true, true)), "cluster.node", "{bad:?}");
            assert_eq!(
                key(setup(&cfg("n", Some(bad)), true, true)),
                "cluster.engine",
                "{bad:?}"
            );
        }
        assert_eq!(key(setup(&cfg("n", None), false, true)), "cluster");
        assert_eq!(key(setup(&cfg("n", None), true, false)), "cluster");
        let mut c = cfg("n", None);
        c.output_stream_len = 10;
        assert_eq!(key(setup(&c, true, true)), "cluster.output_stream_len");
        let mut c = cfg("n", None);
        c.output_backlog = 0;
        assert_eq!(key(setup(&c, true, true)), "cluster.output_backlog");
    }
}
