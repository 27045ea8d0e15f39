//! The order streams' counters, for `/metrics` (`stocksblitz_cluster_*`) and `/health`.

use stocksblitz_engine::counter::Counter;

#[derive(Debug, Default)]
pub struct ClusterStats {
    // Engine node.
    /// Command stream entries read (redeliveries included).
    pub commands_read: Counter,
    /// Forwarded commands applied by the engine.
    pub commands_applied: Counter,
    /// Seen before: answered from the journaled answer, not applied again.
    pub commands_deduplicated: Counter,
    /// Arrived after their deadline: not applied.
    pub commands_expired: Counter,
    /// Entries that did not decode (another format, damage): acknowledged and skipped.
    pub commands_undecodable: Counter,
    /// Order output items and answers on the output stream.
    pub output_published: Counter,
    pub answers_published: Counter,
    /// Output dropped because Redis was unreachable longer than the backlog holds (API
    /// nodes resynchronize from a snapshot).
    pub output_dropped: Counter,
    /// Output items waiting for Redis.
    pub output_backlog: Counter,
    pub publish_errors: Counter,
    pub snapshots_served: Counter,
    /// The consumer group's lag (entries not yet delivered) and pending entries
    /// (delivered, not yet answered), sampled every second.
    pub group_lag: Counter,
    pub group_pending: Counter,
    // API node.
    pub commands_sent: Counter,
    pub answers_received: Counter,
    /// Output items applied to the replica.
    pub output_applied: Counter,
    /// Times the replica was rebuilt from a snapshot (start-up included).
    pub resyncs: Counter,
    /// 1 while the replica is in step with the engine.
    pub synced: Counter,
    /// The last event sequence in the replica (API node) or published (engine node).
    pub last_seq: Counter,
    /// Milliseconds between Redis taking the last entry read and this node reading it.
    pub stream_lag_ms: Counter,
    /// When the engine's last heartbeat was read (ns since the epoch; 0: never).
    pub engine_heartbeat_ns: Counter,
    pub read_errors: Counter,
    /// (API node) why the engine's announcement is refused, if it is (for `/health`).
    pub problem: parking_lot::Mutex<Option<String>>,
}

impl ClusterStats {
    /// (name, kind, help, value) for `/metrics`, labelled there with the node.
    pub fn rows(&self) -> [(&'static str, &'static str, &'static str, u64); 22] {
        [
            ("stocksblitz_cluster_commands_read_total", "counter", "Engine node: command stream entries read (redeliveries included).", self.commands_read.get()),
            ("stocksblitz_cluster_commands_applied_total", "counter", "Engine node: forwarded commands applied.", self.commands_applied.get()),
            ("stocksblitz_cluster_commands_deduplicated_total", "counter", "Engine node: forwarded commands seen before, answered from the journaled answer.", self.commands_deduplicated.get()),
            ("stocksblitz_cluster_commands_expired_total", "counter", "Engine node: forwarded commands that arrived after their deadline (not applied).", self.commands_expired.get()),
            ("stocksblitz_cluster_commands_undecodable_total", "counter", "Engine node: command stream entries that did not decode (skipped).", self.commands_undecodable.get()),
            ("stocksblitz_cluster_output_published_total", "counter", "Engine node: order output items published on the output stream.", self.output_published.get()),
            ("stocksblitz_cluster_answers_published_total", "counter", "Engine node: answers published.", self.answers_published.get()),
            ("stocksblitz_cluster_output_dropped_total", "counter", "Engine node: order output dropped while Redis was unreachable past the backlog (API nodes resynchronize).", self.output_dropped.get()),
            ("stocksblitz_cluster_output_backlog", "gauge", "Engine node: order output items waiting for Redis.", self.output_backlog.get()),
            ("stocksblitz_cluster_publish_errors_total", "counter", "Engine node: failed writes to the output stream (retried).", self.publish_errors.get()),
            ("stocksblitz_cluster_snapshots_served_total", "counter", "Engine node: read-model snapshots written for API nodes.", self.snapshots_served.get()),
            ("stocksblitz_cluster_group_lag", "gauge", "Engine node: command stream entries not yet read by the engine's group.", self.group_lag.get()),
            ("stocksblitz_cluster_group_pending", "gauge", "Engine node: commands read and not yet answered.", self.group_pending.get()),
            ("stocksblitz_cluster_commands_sent_total", "counter", "API node: commands forwarded to the engine.", self.commands_sent.get()),
            ("stocksblitz_cluster_answers_received_total", "counter", "API node: answers read for this node.", self.answers_received.get()),
            ("stocksblitz_cluster_output_applied_total", "counter", "API node: order output items applied to the replica.", self.output_applied.get()),
            ("stocksblitz_cluster_resyncs_total", "counter", "API node: replica rebuilds from a snapshot (start-up included).", self.resyncs.get()),
            ("stocksblitz_cluster_synced", "gauge", "API node: 1 while the order replica is in step with the engine.", self.synced.get()),
            ("stocksblitz_cluster_last_seq", "gauge", "Last order event sequence applied (API node) or published (engine node).", self.last_seq.get()),
            ("stocksblitz_cluster_stream_lag_milliseconds", "gauge", "API node: time between Redis taking the last output entry read and this node reading it.", self.stream_lag_ms.get()),
            ("stocksblitz_cluster_read_errors_total", "counter", "API node: failed reads of the output stream (retried).", self.read_errors.get()),
            ("stocksblitz_cluster_engine_heartbeat_age_milliseconds", "gauge", "API node: age of the engine's last heartbeat (0: never heard).", self.heartbeat_age_ms()),
        ]
    }

    /// Milliseconds since the engine's last heartbeat; 0 when never heard.
    pub fn heartbeat_age_ms(&self) -> u64 {
        let at = self.engine_heartbeat_ns.get();
        if at == 0 {
            return 0;
        }
        (stocksblitz_engine::UnixNanos::now().0.max(0) as u64).saturating_sub(at) / 1_000_000
    }
}
