//! Prometheus metrics: HTTP request counting middleware and the `/metrics` exposition.
//!
//! Hot-path counters live in the engine and feed crates as single-writer atomics; this
//! module only reads them at scrape time and renders the text format, so scraping
//! never touches the engine thread. Names are stable (`stocksblitz_...`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use stocksblitz_engine::orders::store::Held;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use stocksblitz_engine::{DataQuality, UnixNanos};

use crate::state::AppState;

pub mod counters;
pub mod layer;

pub use counters::HttpMetrics;
use counters::BUCKETS;

struct Out(String);

impl Out {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    /// Unlabelled samples: (name, kind, help, value).
    fn scalars(&mut self, rows: &[(&str, &str, &str, u64)]) {
        for (name, kind, help, v) in rows {
            self.header(name, kind, help);
            self.sample(name, "", v);
        }
    }
    fn sample(&mut self, name: &str, labels: &str, v: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {v}");
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub fn render(app: &AppState) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));
    let e = &app.engine.stats;
    let counters: [(&str, &str, u64); 10] = [
        (
            "stocksblitz_surveillance_anomalies_total",
            "Surveillance anomalies reported (and their actions applied).",
            e.anomalies.get(),
        ),
        (
            "stocksblitz_surveillance_suppressed_total",
            "Surveillance findings inside a rule's cooldown for the same subject.",
            e.anomalies_suppressed.get(),
        ),
        (
            "stocksblitz_surveillance_dropped_total",
            "Surveillance anomalies dropped: too many in one step.",
            e.anomalies_dropped.get(),
        ),
        (
            "stocksblitz_engine_ticks_total",
            "Ticks taken from input rings by the engine.",
            e.ticks.get(),
        ),
        (
            "stocksblitz_engine_events_total",
            "Events handed to output rings.",
            e.events.get(),
        ),
        (
            "stocksblitz_engine_unknown_instrument_total",
            "Ticks for an instrument id outside the registry.",
            e.unknown_instrument.get(),
        ),
        (
            "stocksblitz_engine_invalid_deltas_total",
            "Book deltas with a negative quantity.",
            e.invalid_deltas.get(),
        ),
        (
            "stocksblitz_engine_book_discarded_total",
            "Book levels discarded because a full side kept better ones.",
            e.book_discarded.get(),
        ),
        (
            "stocksblitz_engine_late_trades_total",
            "Trades too late for any revisable bar.",
            e.late_trades.get(),
        ),
        (
            "stocksblitz_engine_resyncs_total",
            "Book snapshots sent to consumers that fell behind.",
            e.resyncs.get(),
        ),
    ];
    for (name, help, v) in counters {
        o.header(name, "counter", help);
        o.sample(name, "", v);
    }
    let now = UnixNanos::now().0;
    o.header(
        "stocksblitz_engine_heartbeat_age_seconds",
        "gauge",
        "Seconds since the engine loop last ran housekeeping.",
    );
    o.sample(
        "stocksblitz_engine_heartbeat_age_seconds",
        "",
        (now - e.heartbeat_ns.get() as i64) as f64 / 1e9,
    );

    if let Some((g, _)) = &app.engine.orders {
        o.scalars(&[
            (
                "stocksblitz_orders_commands_total",
                "counter",
                "Commands the engine took from the order queue.",
                g.commands.get(),
            ),
            (
                "stocksblitz_orders_events_total",
                "counter",
                "Order events the engine produced.",
                g.events.get(),
            ),
            (
                "stocksblitz_orders_backlogged_total",
                "counter",
                "Order events that waited because the order ring was full (never dropped).",
                g.backlogged.get(),
            ),
            (
                "stocksblitz_orders_backlog",
                "gauge",
                "Order events waiting for room in the order ring.",
                g.backlog.get(),
            ),
        ]);
    }
    if let Some(svc) = &app.desk.orders {
        o.header(
            "stocksblitz_orders_queue_depth",
            "gauge",
            "Commands waiting for the engine.",
        );
        o.sample("stocksblitz_orders_queue_depth", "", svc.queue_depth());
        o.header(
            "stocksblitz_orders_event_gaps_total",
            "counter",
            "Order event sequence gaps seen by the API (must stay 0).",
        );
        // Summed over the replicas (an API node keeps one per engine).
        let (gaps, held) = svc.stores().iter().fold((0, Held::default()), |(gaps, held), s| {
            let store = s.read();
            let h = store.held();
            (
                gaps + store.seq_gaps(),
                Held {
                    orders: held.orders + h.orders,
                    fills: held.fills + h.fills,
                    keyed: held.keyed + h.keyed,
                },
            )
        });
        o.sample("stocksblitz_orders_event_gaps_total", "", gaps);
        o.scalars(&[
            (
                "stocksblitz_orders_store_orders",
                "gauge",
                "Orders the read model holds (open, and finished up to [orders] history_per_account).",
                held.orders as u64,
            ),
            (
                "stocksblitz_orders_store_fills",
                "gauge",
                "Fills the read model holds (up to [orders] history_per_account per account).",
                held.fills as u64,
            ),
            (
                "stocksblitz_orders_store_keyed_answers",
                "gauge",
                "Idempotency-Key answers the read model holds (24 hours, at most 1,000,000).",
                held.keyed as u64,
            ),
        ]);
        let j = svc.journal();
        o.scalars(&[
            (
                "stocksblitz_journal_records_total",
                "counter",
                "Order journal records written (steps).",
                j.records.get(),
            ),
            (
                "stocksblitz_journal_bytes_total",
                "counter",
                "Bytes written to the order journal.",
                j.bytes.get(),
            ),
            (
                "stocksblitz_journal_commits_total",
                "counter",
                "Group commits of the order journal.",
                j.commits.get(),
            ),
            (
                "stocksblitz_journal_fsyncs_total",
                "counter",
                "fsyncs of the order journal.",
                j.fsyncs.get(),
            ),
            (
                "stocksblitz_journal_head_record",
                "gauge",
                "Number of the last durable journal record.",
                j.head.get(),
            ),
            (
                "stocksblitz_journal_discarded_events_total",
                "counter",
                "Order events not journaled (and not acknowledged) after the journal failed.",
                j.discarded.get(),
            ),
            (
                "stocksblitz_journal_failed",
                "gauge",
                "1 when the journal has failed and order intake is stopped.",
                u64::from(j.is_failed()),
            ),
            (
                "stocksblitz_journal_snapshots_total",
                "counter",
                "Snapshots the snapshot thread wrote.",
                j.snapshots.get(),
            ),
            (
                "stocksblitz_journal_snapshot_record",
                "gauge",
                "Record the last snapshot was taken at.",
                j.snapshot_record.get(),
            ),
            (
                "stocksblitz_journal_snapshot_errors_total",
                "counter",
                "Snapshot failures (snapshots stop for the run; start-up replays more).",
                j.snapshot_errors.get(),
            ),
            (
                "stocksblitz_journal_segments_removed_total",
                "counter",
                "Journal segments archived or deleted by retention.",
                j.segments_removed.get(),
            ),
            (
                "stocksblitz_journal_retention_errors_total",
                "counter",
                "Failed retention passes (retried after the next snapshot).",
                j.retention_errors.get(),
            ),
            (
                "stocksblitz_journal_first_record",
                "gauge",
                "First record the journal directory holds (above 1 once retention removed segments).",
                j.first_record.get(),
            ),
        ]);
        for (name, kind, help, ns) in [
            (
                "stocksblitz_journal_commit_seconds_total",
                "counter",
                "Time spent writing and syncing commits (divide by commits for the mean).",
                j.commit_ns_total.get(),
            ),
            (
                "stocksblitz_journal_commit_max_seconds",
                "gauge",
                "Slowest journal commit since start.",
                j.commit_ns_max.get(),
            ),
        ] {
            o.header(name, kind, help);
            o.sample(name, "", ns as f64 / 1e9);
        }
    }

    if let Some(q) = &app.questdb {
        o.scalars(&[
            (
                "stocksblitz_questdb_rows_in_total",
                "counter",
                "Rows taken in by the QuestDB sink.",
                q.rows_in.get(),
            ),
            (
                "stocksblitz_questdb_rows_sent_total",
                "counter",
                "Rows the server accepted.",
                q.rows_sent.get(),
            ),
            (
                "stocksblitz_questdb_batches_total",
                "counter",
                "Batches sent.",
                q.batches.get(),
            ),
            (
                "stocksblitz_questdb_send_errors_total",
                "counter",
                "Failed sends (each retried after a back-off).",
                q.errors.get(),
            ),
            (
                "stocksblitz_questdb_rejected_rows_total",
                "counter",
                "Rows the encoder refused (kept in rejected.rows).",
                q.rejected.get(),
            ),
            (
                "stocksblitz_questdb_spilled_rows_total",
                "counter",
                "Rows written to spill files.",
                q.spilled_rows.get(),
            ),
            (
                "stocksblitz_questdb_spill_bytes",
                "gauge",
                "Bytes in spill files now.",
                q.spill_bytes.get(),
            ),
            (
                "stocksblitz_questdb_memory_rows",
                "gauge",
                "Rows waiting in memory.",
                q.memory_rows.get(),
            ),
            (
                "stocksblitz_questdb_connected",
                "gauge",
                "1 while the last send succeeded.",
                q.connected.get(),
            ),
        ]);
        o.header(
            "stocksblitz_questdb_lag_seconds",
            "gauge",
            "Age of the oldest row not yet stored.",
        );
        o.sample("stocksblitz_questdb_lag_seconds", "", q.lag_ns.get() as f64 / 1e9);
        // Every row bound for the store: emitted + recovered = stored + rejected +
        // held (pending less the engine's ring) + lost.
        o.scalars(&[
            (
                "stocksblitz_questdb_pending_rows",
                "gauge",
                "Rows not yet stored: the engine's ring to the sink, memory and spill files.",
                q.pending(),
            ),
            (
                "stocksblitz_questdb_spill_rows",
                "gauge",
                "Rows in spill files now.",
                q.spill_rows.get(),
            ),
            (
                "stocksblitz_questdb_recovered_rows_total",
                "counter",
                "Rows found in spill files an earlier run left.",
                q.recovered.get(),
            ),
            (
                "stocksblitz_questdb_lost_rows_total",
                "counter",
                "Rows lost because a spill file could not be written (disk full or failing).",
                q.lost.get(),
            ),
            (
                "stocksblitz_questdb_upstream_missed_events_total",
                "counter",
                "Trades, quotes and closed bars the engine could not hand to the sink (its ring to the sink was full).",
                q.upstream_missed.get(),
            ),
            (
                "stocksblitz_questdb_catching_up",
                "gauge",
                "1 while the sink is behind: rows in spill files, or more than two batches in memory.",
                u64::from(q.catching_up()),
            ),
        ]);
        for (name, help, get) in [
            (
                "stocksblitz_questdb_emitted_rows_total",
                "Rows bound for the store, per table (market data taken from the engine's ring, order events read from the journal).",
                crate::sink::SinkStats::emitted as fn(&crate::sink::SinkStats, crate::sink::row::Table) -> u64,
            ),
            (
                "stocksblitz_questdb_stored_rows_total",
                "Rows the server accepted, per table.",
                crate::sink::SinkStats::stored,
            ),
        ] {
            o.header(name, "counter", help);
            for t in crate::sink::row::Table::ALL {
                o.sample(name, &format!("table=\"{}\"", t.name()), get(q, t));
            }
        }
    }

    if let Some(r) = &app.redis {
        let s = &r.stats;
        o.scalars(&[
            (
                "stocksblitz_redis_connected",
                "gauge",
                "1 while the last Redis round trip succeeded.",
                s.connected.get(),
            ),
            (
                "stocksblitz_redis_commands_total",
                "counter",
                "Redis round trips (commands, pipelines, scripts), failed ones included.",
                s.commands.get(),
            ),
            (
                "stocksblitz_redis_errors_total",
                "counter",
                "Redis round trips that failed or timed out.",
                s.errors.get(),
            ),
            (
                "stocksblitz_redis_published_total",
                "counter",
                "Market data events published to the Redis channel.",
                s.published.get(),
            ),
            (
                "stocksblitz_redis_publish_errors_total",
                "counter",
                "Market data events whose PUBLISH failed (dropped; subscribers see a gap).",
                s.publish_errors.get(),
            ),
            (
                "stocksblitz_redis_quotes_written_total",
                "counter",
                "quote:{SYM} keys written.",
                s.quotes_written.get(),
            ),
            (
                "stocksblitz_redis_decode_errors_total",
                "counter",
                "Market data batches from Redis an API node could not decode.",
                s.decode_errors.get(),
            ),
            (
                "stocksblitz_redis_health_checks_total",
                "counter",
                "/health/redis reports computed against Redis (the rest were served from the cache).",
                s.health_checks.get(),
            ),
        ]);
        for (name, kind, help, ns) in [
            (
                "stocksblitz_redis_round_trip_seconds_total",
                "counter",
                "Time spent waiting for Redis round trips (divide by commands for the mean).",
                s.round_trip_ns_total.get(),
            ),
            (
                "stocksblitz_redis_round_trip_max_seconds",
                "gauge",
                "Slowest Redis round trip since start.",
                s.round_trip_ns_max.get(),
            ),
        ] {
            o.header(name, kind, help);
            o.sample(name, "", ns as f64 / 1e9);
        }
    }

    // One series per link (an API node has one per engine), each family's header once.
    let links: Vec<_> = app
        .cluster
        .iter()
        .map(|(c, setup)| {
            let role = if setup.forwards { "api" } else { "engine" };
            let labels = format!(
                "node=\"{}\",engine=\"{}\",role=\"{role}\"",
                esc(&setup.node),
                esc(&setup.engine)
            );
            (labels, c.rows())
        })
        .collect();
    if let Some((_, first)) = links.first() {
        for (i, (name, kind, help, _)) in first.iter().enumerate() {
            o.header(name, kind, help);
            for (labels, rows) in &links {
                o.sample(name, labels, rows[i].3);
            }
        }
    }

    // Rings: inputs (one per feed), outputs (one per consumer), the order event ring.
    let mut rings: Vec<(&str, &stocksblitz_engine::ring::RingStats)> =
        app.engine.inputs.iter().map(|r| ("input", r.as_ref())).collect();
    rings.extend(app.engine.outputs.iter().map(|(r, _)| ("output", r.as_ref())));
    rings.extend(app.engine.orders.iter().map(|(_, r)| ("orders", r.as_ref())));
    rings.extend(app.taps.iter().map(|r| ("tap", r.as_ref())));
    for (name, kind, help) in [
        ("stocksblitz_ring_pushed_total", "counter", "Items pushed into a ring."),
        (
            "stocksblitz_ring_dropped_total",
            "counter",
            "Items dropped because a ring was full.",
        ),
        ("stocksblitz_ring_fill", "gauge", "Items waiting in a ring."),
        ("stocksblitz_ring_capacity", "gauge", "Slots in a ring."),
    ] {
        o.header(name, kind, help);
        for (dir, r) in &rings {
            let labels = format!("ring=\"{}\",direction=\"{dir}\"", esc(&r.name));
            let v = match name {
                "stocksblitz_ring_pushed_total" => r.pushed.get(),
                "stocksblitz_ring_dropped_total" => r.dropped.get(),
                "stocksblitz_ring_fill" => r.fill(),
                _ => r.capacity as u64,
            };
            o.sample(name, &labels, v);
        }
    }
    o.header(
        "stocksblitz_output_suppressed_total",
        "counter",
        "Events not sent to a consumer waiting for a resync snapshot.",
    );
    for (r, s) in &app.engine.outputs {
        o.sample(
            "stocksblitz_output_suppressed_total",
            &format!("ring=\"{}\"", esc(&r.name)),
            s.suppressed.get(),
        );
    }

    // Feeds.
    for (name, help, get) in [
        (
            "stocksblitz_feed_messages_total",
            "Venue messages handled.",
            (|f| f.messages.get()) as fn(&stocksblitz_feed_handlers::FeedStats) -> u64,
        ),
        ("stocksblitz_feed_bytes_total", "Bytes received from the venue.", |f| {
            f.bytes.get()
        }),
        ("stocksblitz_feed_ticks_total", "Normalized ticks produced.", |f| {
            f.ticks.get()
        }),
        (
            "stocksblitz_feed_parse_errors_total",
            "Messages that failed to parse.",
            |f| f.parse_errors.get(),
        ),
        ("stocksblitz_feed_gaps_total", "Sequence gaps detected.", |f| {
            f.gaps.get()
        }),
        ("stocksblitz_feed_resyncs_total", "Book resyncs started.", |f| {
            f.resyncs.get()
        }),
        ("stocksblitz_feed_reconnects_total", "Reconnects.", |f| {
            f.reconnects.get()
        }),
        ("stocksblitz_feed_up", "1 while the feed thread runs.", |f| {
            f.running.get()
        }),
    ] {
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        o.header(name, kind, help);
        for f in &app.feeds {
            o.sample(
                name,
                &format!("feed=\"{}\",kind=\"{}\"", esc(&f.name), f.kind),
                get(&f.stats),
            );
        }
    }

    // Feed connection state: 1 for the current one (a refused token shows as
    // "unauthorized"), how long it has held, and refused connection attempts.
    o.header(
        "stocksblitz_feed_state",
        "gauge",
        "1 for the feed's current connection state (starting, connected, disconnected, unauthorized, stopped).",
    );
    for f in &app.feeds {
        let current = f.state();
        for s in stocksblitz_feed_handlers::FeedState::ALL {
            let labels = format!("feed=\"{}\",kind=\"{}\",state=\"{}\"", esc(&f.name), f.kind, s.as_str());
            o.sample("stocksblitz_feed_state", &labels, u8::from(s == current));
        }
    }
    o.header(
        "stocksblitz_feed_state_seconds",
        "gauge",
        "Seconds the feed has been in its current connection state.",
    );
    let now = UnixNanos::now().0;
    for f in &app.feeds {
        let since = f.stats.state_since().map_or(0, |t| t.0);
        let secs = if since == 0 {
            app.started.elapsed().as_secs_f64()
        } else {
            (now - since).max(0) as f64 / 1e9
        };
        o.sample(
            "stocksblitz_feed_state_seconds",
            &format!("feed=\"{}\",kind=\"{}\"", esc(&f.name), f.kind),
            format!("{secs:.3}"),
        );
    }
    o.header(
        "stocksblitz_feed_auth_failures_total",
        "counter",
        "Connection attempts the venue refused for their credentials (HTTP 401/403).",
    );
    for f in &app.feeds {
        o.sample(
            "stocksblitz_feed_auth_failures_total",
            &format!("feed=\"{}\",kind=\"{}\"", esc(&f.name), f.kind),
            f.stats.auth_failures.get(),
        );
    }
    o.header(
        "stocksblitz_ready",
        "gauge",
        "1 when /health/ready answers 200 (the [health] rule holds).",
    );
    o.sample("stocksblitz_ready", "", u8::from(super::health::is_ready(app)));

    // Data quality per instrument.
    o.header(
        "stocksblitz_instrument_quality",
        "gauge",
        "1 for the instrument's current data-quality state.",
    );
    {
        let mirror = app.desk.market.mirror.read();
        for inst in app.desk.market.registry.iter() {
            let q = mirror.get(inst.id).map(|v| v.quality()).unwrap_or(DataQuality::Syncing);
            for s in DataQuality::ALL {
                let labels = format!("symbol=\"{}\",state=\"{}\"", esc(&inst.symbol), s.as_str());
                o.sample("stocksblitz_instrument_quality", &labels, u8::from(s == q));
            }
        }
    }

    // API fan-out and WebSockets.
    o.header(
        "stocksblitz_fanout_events_total",
        "counter",
        "Engine events applied by the API fan-out.",
    );
    o.sample("stocksblitz_fanout_events_total", "", app.fanout.events.get());
    let ws = &app.hub.stats;
    o.scalars(&[
        (
            "stocksblitz_ws_connections",
            "gauge",
            "Open WebSocket connections.",
            ws.connections.load(Ordering::Relaxed),
        ),
        (
            "stocksblitz_ws_connections_total",
            "counter",
            "WebSocket connections accepted.",
            ws.connections_total.load(Ordering::Relaxed),
        ),
        (
            "stocksblitz_ws_subscriptions",
            "gauge",
            "Channel subscriptions across connections.",
            app.hub.subscription_count() as u64,
        ),
        (
            "stocksblitz_ws_messages_sent_total",
            "counter",
            "WebSocket messages sent.",
            ws.messages_sent.load(Ordering::Relaxed),
        ),
        (
            "stocksblitz_ws_conflated_total",
            "counter",
            "Quote/book updates a connection got folded into a newer state (it was not ready to write).",
            ws.conflated.load(Ordering::Relaxed),
        ),
        (
            "stocksblitz_ws_dropped_total",
            "counter",
            "Trade/bar messages a connection skipped (it fell behind its channel's ring; sent as missed).",
            ws.dropped.load(Ordering::Relaxed),
        ),
        (
            "stocksblitz_ws_client_errors_total",
            "counter",
            "Error replies to client requests.",
            ws.client_errors.load(Ordering::Relaxed),
        ),
    ]);

    o.header(
        "stocksblitz_ws_closed_total",
        "counter",
        "WebSockets closed by the server, by reason (close code: idle 1001, message_too_large 1009, private_overflow 4008, slow_consumer 4009).",
    );
    for (reason, n) in [
        ("idle", &ws.closed_idle),
        ("message_too_large", &ws.closed_too_big),
        ("private_overflow", &ws.closed_private_overflow),
        ("slow_consumer", &ws.closed_slow_consumer),
    ] {
        o.sample(
            "stocksblitz_ws_closed_total",
            &format!("reason=\"{reason}\""),
            n.load(Ordering::Relaxed),
        );
    }

    // Connections ([api.connections]).
    let c = &app.http.connections;
    o.scalars(&[
        (
            "stocksblitz_connections_open",
            "gauge",
            "Client connections open (HTTP and WebSocket).",
            c.open.load(Ordering::Relaxed),
        ),
        (
            "stocksblitz_connections_accepted_total",
            "counter",
            "Client connections accepted from the listener (admitted or refused).",
            c.accepted.load(Ordering::Relaxed),
        ),
        (
            "stocksblitz_accept_errors_total",
            "counter",
            "Failed accepts (for instance out of file descriptors).",
            c.accept_errors.load(Ordering::Relaxed),
        ),
    ]);
    o.header(
        "stocksblitz_connections_refused_total",
        "counter",
        "Connections answered 503 and closed at accept, by the limit reached.",
    );
    for (limit, n) in [
        ("max_connections", &c.refused_total),
        ("max_connections_per_address", &c.refused_per_address),
    ] {
        o.sample(
            "stocksblitz_connections_refused_total",
            &format!("limit=\"{limit}\""),
            n.load(Ordering::Relaxed),
        );
    }
    o.header(
        "stocksblitz_connections_closed_total",
        "counter",
        "Connections closed by a connection limit, by reason.",
    );
    for (reason, n) in [
        ("header_timeout", &c.header_timeout),
        ("idle_timeout", &c.idle_timeout),
        ("header_too_large", &c.header_too_large),
        ("tls_handshake", &c.tls_handshake_failed),
    ] {
        o.sample(
            "stocksblitz_connections_closed_total",
            &format!("reason=\"{reason}\""),
            n.load(Ordering::Relaxed),
        );
    }
    o.header(
        "stocksblitz_tls_reloads_total",
        "counter",
        "Certificate reloads (SIGHUP), by result.",
    );
    o.sample(
        "stocksblitz_tls_reloads_total",
        "result=\"ok\"",
        c.tls_reloads.load(Ordering::Relaxed),
    );
    o.sample(
        "stocksblitz_tls_reloads_total",
        "result=\"error\"",
        c.tls_reload_errors.load(Ordering::Relaxed),
    );

    // HTTP.
    let routes = app.http.routes();
    o.header(
        "stocksblitz_http_requests_total",
        "counter",
        "HTTP requests by route template, method and status.",
    );
    for ((route, method), r) in &routes {
        for (status, n) in &r.by_status {
            let labels = format!("route=\"{}\",method=\"{method}\",status=\"{status}\"", esc(route));
            o.sample("stocksblitz_http_requests_total", &labels, n);
        }
    }
    o.header(
        "stocksblitz_http_request_duration_seconds",
        "histogram",
        "HTTP request latency by route template and method.",
    );
    for ((route, method), r) in &routes {
        let base = format!("route=\"{}\",method=\"{method}\"", esc(route));
        for (le, n) in BUCKETS.iter().zip(r.buckets) {
            o.sample(
                "stocksblitz_http_request_duration_seconds_bucket",
                &format!("{base},le=\"{le}\""),
                n,
            );
        }
        o.sample(
            "stocksblitz_http_request_duration_seconds_bucket",
            &format!("{base},le=\"+Inf\""),
            r.count,
        );
        o.sample("stocksblitz_http_request_duration_seconds_sum", &base, r.sum_secs);
        o.sample("stocksblitz_http_request_duration_seconds_count", &base, r.count);
    }
    o.header(
        "stocksblitz_http_errors_total",
        "counter",
        "Error responses by stable error code and HTTP status.",
    );
    for (code, status, n) in app.http.errors_by_code() {
        o.sample(
            "stocksblitz_http_errors_total",
            &format!("code=\"{code}\",status=\"{status}\""),
            n,
        );
    }
    security(&mut o, app);
    o.header("stocksblitz_uptime_seconds", "gauge", "Seconds since the API started.");
    o.sample("stocksblitz_uptime_seconds", "", app.started.elapsed().as_secs_f64());
    o.0
}

/// Rate limiting and the audit log.
fn security(o: &mut Out, app: &AppState) {
    let l = &app.access.limiter.stats;
    for (name, help, counters) in [
        (
            "stocksblitz_ratelimit_allowed_total",
            "Requests within their tier's rate limit.",
            &l.allowed,
        ),
        (
            "stocksblitz_ratelimit_limited_total",
            "Requests refused with 429 by their tier's rate limit.",
            &l.limited,
        ),
    ] {
        o.header(name, "counter", help);
        for tier in crate::ratelimit::LimitTier::ALL {
            let v = counters[tier as usize].load(Ordering::Relaxed);
            o.sample(name, &format!("tier=\"{}\"", tier.as_str()), v);
        }
    }
    let (held, max) = app.access.limiter.local_fill();
    o.scalars(&[
        (
            "stocksblitz_ratelimit_local_buckets",
            "gauge",
            "Rate-limit buckets held in this node's table (with [redis], filled only while Redis fails).",
            held as u64,
        ),
        (
            "stocksblitz_ratelimit_max_buckets",
            "gauge",
            "Size of this node's rate-limit table (rate_limits.max_keys); when full, new anonymous callers may get 429.",
            max as u64,
        ),
    ]);
    let a = &app.access.audit.stats;
    o.scalars(&[
        (
            "stocksblitz_ratelimit_redis_fallbacks_total",
            "counter",
            "Rate-limit checks answered by this node's buckets because Redis failed.",
            l.redis_fallbacks.load(Ordering::Relaxed),
        ),
        (
            "stocksblitz_ratelimit_auth_failures_limited_total",
            "counter",
            "Requests with credentials refused unchecked because their address failed authentication too often.",
            l.auth_failures_limited.load(Ordering::Relaxed),
        ),
        (
            "stocksblitz_audit_written_total",
            "counter",
            "Audit log entries written.",
            a.written.load(Ordering::Relaxed),
        ),
        (
            "stocksblitz_audit_auth_failures_total",
            "counter",
            "Authentication failures seen (the audit log aggregates repeats per address).",
            a.auth_failures.load(Ordering::Relaxed),
        ),
        (
            "stocksblitz_audit_dropped_total",
            "counter",
            "Authentication failures not audited because the audit queue was full.",
            a.dropped.load(Ordering::Relaxed),
        ),
        (
            "stocksblitz_audit_refused_total",
            "counter",
            "Actions refused because the audit log could not take them.",
            a.refused.load(Ordering::Relaxed),
        ),
        (
            "stocksblitz_audit_lost_total",
            "counter",
            "Audit entries lost: a write failed and the log shut down before a retry succeeded.",
            a.lost.load(Ordering::Relaxed),
        ),
        (
            "stocksblitz_audit_write_errors_total",
            "counter",
            "Failed audit log write attempts (a full disk); each is retried every second.",
            a.write_errors.load(Ordering::Relaxed),
        ),
        (
            "stocksblitz_audit_failed",
            "gauge",
            "1 when the audit log cannot be written.",
            u64::from(!app.access.audit.healthy()),
        ),
    ]);
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    summary = "Prometheus metrics",
    responses((status = 200, description = "OK", body = String, content_type = "text/plain")),
)]
pub async fn handler(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        render(&app),
    )
}
