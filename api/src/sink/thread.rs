//! The QuestDB sink thread: takes market data from its tap ring off the API fan-out
//! and order events from the order journal, batches rows (by count and by time, with its
//! own timer: questdb-rs does not flush on its own), sends them over ILP, and when the
//! server is slow or down retries with back-off while rows wait in memory and then in
//! spill files. Nothing upstream waits for it: its ring is drained whatever the
//! server does (a full ring drops and counts).
//!
//! Order events come from the journal, not a ring: they are durable there, so none is
//! lost even if this thread stops, and the position up to which they are stored is
//! saved (`orders.position` in the spill directory) to resume after a restart.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use questdb::ingress::{Buffer, Sender};
use stocksblitz_engine::journal::format::{hex, Hash};
use stocksblitz_engine::journal::{record, JournalStats, JournalTailer, Record};
use stocksblitz_engine::ring::RingConsumer;
use stocksblitz_engine::{EngineEvent, UnixNanos};

use super::ilp::{write_row, Names};
use super::row::SinkRow;
use super::spill::Spill;
use super::stats::SinkStats;
use crate::config::questdb::QuestDbSetup;

const RING_BATCH: usize = 4096;
const ORDER_POLL: Duration = Duration::from_millis(20);

/// Order events, read from the journal as it grows.
pub struct OrderFeed {
    pub tailer: JournalTailer,
    pub journal: Arc<JournalStats>,
    next_poll: Instant,
}

impl OrderFeed {
    pub fn new(tailer: JournalTailer, journal: Arc<JournalStats>) -> Self {
        Self {
            tailer,
            journal,
            next_poll: Instant::now(),
        }
    }
}

pub struct QuestDbSink {
    setup: QuestDbSetup,
    /// The password or token (never logged).
    secret: Option<String>,
    names: Names,
    sender: Option<Sender>,
    buf: Buffer,
    memory: VecDeque<SinkRow>,
    spill: Spill,
    /// The spill file whose rows are in `memory` (deleted once they are stored), and
    /// whether an earlier run left it.
    draining: Option<(PathBuf, bool)>,
    /// Spill files present at start (their rows were counted by an earlier run).
    legacy: Vec<PathBuf>,
    market: Option<RingConsumer<EngineEvent>>,
    events: Vec<EngineEvent>,
    orders: Option<OrderFeed>,
    order_rows: Vec<SinkRow>,
    stats: Arc<SinkStats>,
    backoff: Duration,
    next_try: Instant,
    last_flush: Instant,
    /// Rows taken in this run, and rows of this run stored (or rejected), in order.
    taken: u64,
    done: u64,
    /// Journal positions to save once `done` reaches the count.
    marks: VecDeque<(u64, (u64, Hash))>,
    rejected: Option<BufWriter<File>>,
    rng: u64,
}

/// Whether the server refused the data itself (QuestDB answers a bad line with 400 and
/// a JSON error naming the line), as opposed to being unavailable or failing: such a
/// batch would fail the same way forever.
fn refuses_line(e: &questdb::Error) -> bool {
    e.code() == questdb::ErrorCode::ServerFlushError && e.msg().contains("line: ")
}

impl QuestDbSink {
    pub fn new(
        setup: QuestDbSetup,
        secret: Option<String>,
        names: Names,
        market: Option<RingConsumer<EngineEvent>>,
        orders: Option<OrderFeed>,
        stats: Arc<SinkStats>,
    ) -> std::io::Result<Self> {
        let spill = Spill::open(&setup.spill_dir)?;
        let legacy = std::fs::read_dir(&setup.spill_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rows") && !p.ends_with("rejected.rows"))
            .collect();
        let version = if setup.protocol_version == 2 {
            questdb::ingress::ProtocolVersion::V2
        } else {
            questdb::ingress::ProtocolVersion::V1
        };
        stats.spill_bytes.set(spill.bytes());
        let now = Instant::now();
        Ok(Self {
            secret,
            names,
            sender: None,
            buf: Buffer::new(version),
            memory: VecDeque::with_capacity(setup.batch_rows * 2),
            spill,
            draining: None,
            legacy,
            market,
            events: Vec::with_capacity(RING_BATCH),
            orders,
            order_rows: Vec::new(),
            stats,
            backoff: setup.retry_initial,
            next_try: now,
            last_flush: now,
            taken: 0,
            done: 0,
            marks: VecDeque::new(),
            rejected: None,
            rng: 0x2545_F491_4F6C_DD1D,
            setup,
        })
    }

    pub fn spawn(mut self, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("questdb-sink".into())
            .spawn(move || loop {
                let stopping = stop.load(Ordering::Acquire);
                let worked = self.take_market() + self.take_orders(stopping);
                self.maybe_send(stopping);
                self.gauges();
                if stopping {
                    self.shutdown();
                    return;
                }
                if worked == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
    }

    /// Takes what the engine published.
    pub fn take_market(&mut self) -> usize {
        let Some(ring) = self.market.as_mut() else { return 0 };
        self.events.clear();
        let n = ring.pop_batch(&mut self.events, RING_BATCH);
        for i in 0..self.events.len() {
            if let Some(row) = self.events.get(i).and_then(SinkRow::from_market) {
                self.push_row(row);
            }
        }
        n
    }

    /// Reads order events the journal has made durable since the last poll.
    pub fn take_orders(&mut self, now_anyway: bool) -> usize {
        let Some(feed) = self.orders.as_mut() else { return 0 };
        let now = Instant::now();
        if now < feed.next_poll && !now_anyway {
            return 0;
        }
        feed.next_poll = now + ORDER_POLL;
        let rows = &mut self.order_rows;
        rows.clear();
        let head = feed.journal.head.get();
        let polled = feed.tailer.poll(head, |seq, payload| {
            match record::decode(payload) {
                Ok(Record::Step { events, .. }) => rows.extend(events.iter().filter_map(SinkRow::from_order)),
                Ok(Record::Start(_)) => {}
                Err(e) => {
                    return Err(stocksblitz_engine::journal::JournalError::Undecodable {
                        seq,
                        what: e.to_string(),
                    })
                }
            }
            Ok(())
        });
        let position = feed.tailer.position();
        if let Err(e) = polled {
            tracing::error!(error = %e, "questdb sink: cannot follow the order journal; order events are no longer exported");
            self.stats.set_error(Some(format!("order journal: {e}")));
            self.orders = None;
        }
        let rows = std::mem::take(&mut self.order_rows);
        let n = rows.len();
        for row in &rows {
            self.push_row(*row);
        }
        self.order_rows = rows;
        if n > 0 {
            self.marks.push_back((self.taken, position));
        }
        n
    }

    /// Queues a row: in memory while there is room and nothing is spilled, else in the
    /// spill files (in order). Never drops.
    pub fn push_row(&mut self, row: SinkRow) {
        self.stats.rows_in.inc();
        self.taken += 1;
        if self.spill.is_active() || self.memory.len() >= self.setup.memory_rows {
            match self.spill.append(&row) {
                Ok(()) => {
                    self.stats.spilled_rows.inc();
                    return;
                }
                Err(e) => {
                    // Past the memory bound rather than lost.
                    tracing::error!(error = %e, "questdb sink: cannot spill; holding the row in memory");
                    self.stats.set_error(Some(format!("spill: {e}")));
                }
            }
        }
        self.memory.push_back(row);
    }

    /// Sends a batch when one is due and the back-off allows.
    pub fn maybe_send(&mut self, force: bool) {
        let now = Instant::now();
        if now < self.next_try {
            return;
        }
        if self.memory.is_empty() {
            self.finish_draining();
            if self.spill.is_active() {
                match self.spill.load_oldest(&mut self.memory) {
                    Ok(Some(path)) => {
                        let legacy = self.legacy.contains(&path);
                        self.draining = Some((path, legacy));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "questdb sink: cannot read a spill file");
                        self.stats.set_error(Some(format!("spill: {e}")));
                    }
                }
            }
        }
        if self.memory.is_empty() {
            let _ = self.spill.flush();
            return;
        }
        let due = force
            || self.memory.len() >= self.setup.batch_rows
            || self.draining.is_some()
            || now.duration_since(self.last_flush) >= self.setup.flush_interval;
        if due {
            self.send();
        }
    }

    fn finish_draining(&mut self) {
        if let Some((path, _)) = self.draining.take() {
            if let Err(e) = self.spill.done(&path) {
                tracing::warn!(file = %path.display(), error = %e, "questdb sink: cannot delete a drained spill file");
            }
        }
    }

    fn send(&mut self) {
        let n = self.memory.len().min(self.setup.batch_rows);
        self.buf.clear();
        let mut rejected = Vec::new();
        for row in self.memory.iter().take(n) {
            let _ = self.buf.set_marker();
            if let Err(e) = write_row(&mut self.buf, row, &self.names) {
                let _ = self.buf.rewind_to_marker();
                rejected.push((*row, e.to_string()));
            }
        }
        self.buf.clear_marker();
        if self.sender.is_none() {
            match Sender::from_conf(self.setup.conf_with(self.secret.as_deref())) {
                Ok(s) => self.sender = Some(s),
                Err(e) => return self.failed(&e.to_string()),
            }
        }
        let sent = match self.sender.as_mut() {
            Some(s) if !self.buf.is_empty() => s.flush(&mut self.buf),
            _ => Ok(()),
        };
        if let Err(e) = sent {
            if refuses_line(&e) {
                // The server named a line it will not take: find it (and any others)
                // rather than retrying the batch forever.
                return self.isolate(n);
            }
            // The connection may be half-broken: start a new one next time.
            self.sender = None;
            return self.failed(&e.to_string());
        }
        let stored = n - rejected.len();
        self.batch_done(n, stored, rejected);
    }

    /// The first `n` rows are stored (`stored` of them) or kept as refused.
    fn batch_done(&mut self, n: usize, stored: usize, refused: Vec<(SinkRow, String)>) {
        self.memory.drain(..n);
        self.stats.rows_sent.add(stored as u64);
        self.stats.batches.inc();
        self.stats.connected.set(1);
        for (row, why) in refused {
            self.reject(&row, &why);
        }
        if !self.draining.as_ref().is_some_and(|d| d.1) {
            self.done += n as u64;
        }
        self.backoff = self.setup.retry_initial;
        self.last_flush = Instant::now();
        self.save_positions();
    }

    /// Sends the first `n` rows one at a time after the server refused a line of the
    /// batch: the rows it refuses (it names the line) are kept in `rejected.rows`, the
    /// rest is stored. Any other failure stops the pass with nothing set aside: the
    /// batch is retried whole later. Re-sent rows are harmless (DEDUP keys).
    fn isolate(&mut self, n: usize) {
        let mut refused = Vec::new();
        let mut stored = 0usize;
        for i in 0..n {
            let Some(row) = self.memory.get(i).copied() else { break };
            self.buf.clear();
            if let Err(e) = write_row(&mut self.buf, &row, &self.names) {
                refused.push((row, e.to_string()));
                continue;
            }
            let Some(sender) = self.sender.as_mut() else {
                return self.failed("no connection");
            };
            match sender.flush(&mut self.buf) {
                Ok(()) => stored += 1,
                Err(e) if refuses_line(&e) => refused.push((row, e.to_string())),
                Err(e) => {
                    self.sender = None;
                    return self.failed(&e.to_string());
                }
            }
        }
        self.batch_done(n, stored, refused);
    }

    fn failed(&mut self, why: &str) {
        self.stats.errors.inc();
        self.stats.connected.set(0);
        if self.stats.last_error().as_deref() != Some(why) {
            tracing::warn!(error = %why, retry_in_ms = self.backoff.as_millis() as u64, "questdb sink: send failed");
        }
        self.stats.set_error(Some(why.to_owned()));
        // Full jitter on the back-off, then double it up to the cap.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let wait = self.backoff.as_micros() as u64;
        let jittered = wait / 2 + self.rng % (wait / 2 + 1);
        self.next_try = Instant::now() + Duration::from_micros(jittered);
        self.backoff = (self.backoff * 2).min(self.setup.retry_max);
    }

    /// Rows the encoder refused are kept, not lost: `rejected.rows` in the spill
    /// directory, same format as spill files.
    fn reject(&mut self, row: &SinkRow, why: &str) {
        self.stats.rejected.inc();
        tracing::error!(error = %why, "questdb sink: a row was refused; kept in rejected.rows");
        if self.rejected.is_none() {
            let path = self.setup.spill_dir.join("rejected.rows");
            match OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => self.rejected = Some(BufWriter::new(f)),
                Err(e) => tracing::error!(error = %e, "questdb sink: cannot open rejected.rows"),
            }
        }
        if let Some(w) = self.rejected.as_mut() {
            let written = postcard::to_io(row, &mut *w).is_ok() && w.flush().is_ok();
            if !written {
                tracing::error!("questdb sink: cannot write rejected.rows");
            }
        }
    }

    /// Saves the journal position up to which every order event is stored.
    fn save_positions(&mut self) {
        let mut last = None;
        while let Some(&(count, pos)) = self.marks.front() {
            if count > self.done {
                break;
            }
            last = Some(pos);
            self.marks.pop_front();
        }
        if let Some((seq, hash)) = last {
            let path = self.setup.spill_dir.join("orders.position");
            let tmp = self.setup.spill_dir.join("orders.position.tmp");
            let saved =
                std::fs::write(&tmp, format!("{seq} {}\n", hex(&hash))).and_then(|_| std::fs::rename(&tmp, &path));
            if let Err(e) = saved {
                tracing::warn!(error = %e, "questdb sink: cannot save the order journal position");
            }
        }
    }

    fn gauges(&self) {
        self.stats.memory_rows.set(self.memory.len() as u64);
        self.stats.spill_bytes.set(self.spill.bytes());
        let oldest = self.memory.front().map(row_ts);
        let lag = oldest.map_or(0, |ts| UnixNanos::now().0.saturating_sub(ts).max(0) as u64);
        self.stats
            .lag_ns
            .set(if self.spill.is_active() && lag == 0 { 1 } else { lag });
    }

    /// At stop: one last send, then whatever is left goes to the spill files.
    fn shutdown(&mut self) {
        self.next_try = Instant::now();
        while !self.memory.is_empty() && Instant::now() >= self.next_try {
            let before = self.memory.len();
            self.maybe_send(true);
            if self.memory.len() >= before {
                break;
            }
        }
        if self.draining.is_none() || self.memory.is_empty() {
            self.finish_draining();
        }
        // Rows of a file being drained are still in that file; others are spilled now.
        let rows: Vec<SinkRow> = if self.draining.is_some() {
            Vec::new()
        } else {
            self.memory.drain(..).collect()
        };
        for row in &rows {
            if let Err(e) = self.spill.append(row) {
                tracing::error!(error = %e, "questdb sink: rows lost at shutdown: cannot spill");
                break;
            }
        }
        if let Err(e) = self.spill.flush() {
            tracing::error!(error = %e, "questdb sink: cannot flush spill at shutdown");
        }
        self.gauges();
    }
}

fn row_ts(r: &SinkRow) -> i64 {
    match *r {
        SinkRow::Trade { ts, .. }
        | SinkRow::Quote { ts, .. }
        | SinkRow::Bar { ts, .. }
        | SinkRow::Order { ts, .. }
        | SinkRow::Fill { ts, .. }
        | SinkRow::Anomaly { ts, .. } => ts,
    }
}

/// The saved order journal position, if any.
pub fn saved_position(dir: &std::path::Path) -> Option<(u64, Hash)> {
    let text = std::fs::read_to_string(dir.join("orders.position")).ok()?;
    let (seq, h) = text.trim().split_once(' ')?;
    let seq = seq.parse().ok()?;
    let mut hash = [0u8; 32];
    for (i, b) in hash.iter_mut().enumerate() {
        *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((seq, hash))
}
