//! The QuestDB sink: two threads around one queue.
//!
//! - `questdb-tap` drains the engine's ring to the sink (a recorder output: only trades,
//!   quotes and closed bars, with no slower consumer between them) and reads order
//!   events from the order journal, queueing rows in memory (bounded by `memory_rows`)
//!   and past that in spill files, in order. It never waits on the network, so the ring
//!   is drained promptly whatever the server does; the engine never waits either, and
//!   counts what a full ring could not take (`upstream_missed`). Nothing is dropped
//!   short of a spill file the disk will not take, which is counted (`lost`) and
//!   reported loudly.
//! - `questdb-sink` takes batches from the front of the queue (by count and by time,
//!   with its own timer: questdb-rs does not flush on its own), sends them over ILP, and
//!   when the server is slow or down retries with jittered back-off; when memory is
//!   empty it loads the oldest spill file back. The queue's lock is never held across a
//!   send.
//!
//! Order events come from the journal, not a ring: they are durable there, so none is
//! lost even if this thread stops, and the position up to which they are stored is
//! saved (`orders.position` in the spill directory) to resume after a restart.
//!
//! At stop the tap is drained until the engine has gone, one last send is tried, and
//! whatever is still held goes to the spill files for the next run.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use questdb::ingress::{Buffer, Sender};
use stocksblitz_engine::agent::{spawn_agent, Agent, AgentError, AgentSpec, ThreadHandle};
use stocksblitz_engine::journal::format::{hex, Hash};
use stocksblitz_engine::journal::{record, JournalStats, JournalTailer, Record};
use stocksblitz_engine::ring::RingConsumer;
use stocksblitz_engine::{EngineEvent, UnixNanos};

use super::ilp::{write_row, Names};
use super::row::SinkRow;
use super::spill::{Spill, SpillError};
use super::stats::SinkStats;
use crate::config::questdb::QuestDbSetup;

const RING_BATCH: usize = 4096;
const ORDER_POLL: Duration = Duration::from_millis(20);
/// After stop, the tap is drained until the engine has gone, or until it stayed empty
/// this long (a producer that outlives the sink, as in tests).
const STOP_QUIET: Duration = Duration::from_secs(1);

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

/// The spill file whose rows are at the front of memory.
struct Draining {
    path: PathBuf,
    /// Left by an earlier run (its rows are not this run's).
    legacy: bool,
    /// Its rows still in memory, not yet stored.
    left: usize,
}

/// Rows waiting, oldest first: in memory, then in spill files. Shared by both threads.
struct Queue {
    memory: VecDeque<SinkRow>,
    memory_rows: usize,
    spill: Spill,
    draining: Option<Draining>,
    /// Spill files present at start.
    legacy: Vec<PathBuf>,
    /// Rows taken in this run, and rows of this run stored (or refused), in order.
    taken: u64,
    done: u64,
    /// Journal positions to save once `done` reaches the count.
    marks: VecDeque<(u64, (u64, Hash))>,
}

fn report_lost(stats: &SinkStats, e: &SpillError) {
    stats.lost.add(e.lost);
    tracing::error!(error = %e, lost = e.lost, "questdb sink: ROWS LOST: a spill file could not be written (disk full or failing)");
    stats.set_error(Some(format!("rows lost: {e}")));
}

impl Queue {
    /// Queues a row: in memory while there is room and nothing is spilled, else in the
    /// spill files (in order).
    fn push(&mut self, row: SinkRow, stats: &SinkStats) {
        stats.rows_in.inc();
        self.taken += 1;
        if self.spill.is_active() || self.memory.len() >= self.memory_rows {
            match self.spill.append(&row) {
                Ok(()) => stats.spilled_rows.inc(),
                Err(e) => report_lost(stats, &e),
            }
            return;
        }
        self.memory.push_back(row);
    }

    /// When memory is empty, loads the oldest spill file into it.
    fn refill(&mut self, stats: &SinkStats) {
        if !self.memory.is_empty() || !self.spill.is_active() {
            return;
        }
        if let Some(path) = self.spill.load_oldest(&mut self.memory, |e| report_lost(stats, &e)) {
            let legacy = self.legacy.contains(&path);
            self.draining = Some(Draining {
                path,
                legacy,
                left: self.memory.len(),
            });
            self.finish_file();
        }
    }

    /// Deletes the file being drained once all its rows are stored.
    fn finish_file(&mut self) {
        if self.draining.as_ref().is_some_and(|d| d.left == 0) {
            if let Some(d) = self.draining.take() {
                if let Err(e) = self.spill.done(&d.path) {
                    tracing::warn!(file = %d.path.display(), error = %e, "questdb sink: cannot delete a drained spill file");
                }
            }
        }
    }

    /// The first `n` rows are stored (or set aside as refused). Returns the journal
    /// position to save, if one is now covered.
    fn complete(&mut self, n: usize) -> Option<(u64, Hash)> {
        let n = n.min(self.memory.len());
        self.memory.drain(..n);
        let mut theirs = 0;
        if let Some(d) = self.draining.as_mut() {
            let from_file = n.min(d.left);
            d.left -= from_file;
            if d.legacy {
                theirs = from_file;
            }
        }
        self.finish_file();
        self.done += (n - theirs) as u64;
        let mut last = None;
        while let Some(&(count, pos)) = self.marks.front() {
            if count > self.done {
                break;
            }
            last = Some(pos);
            self.marks.pop_front();
        }
        last
    }

    fn gauges(&self, stats: &SinkStats) {
        stats.memory_rows.set(self.memory.len() as u64);
        stats.spill_rows.set(self.spill.rows());
        stats.spill_bytes.set(self.spill.bytes());
        let oldest = self.memory.front().map(SinkRow::received);
        let lag = oldest.map_or(0, |ts| UnixNanos::now().0.saturating_sub(ts).max(0) as u64);
        stats
            .lag_ns
            .set(if self.spill.is_active() && lag == 0 { 1 } else { lag });
    }
}

/// The sink, built and ready to start ([`QuestDbSink::spawn`]).
pub struct QuestDbSink {
    setup: QuestDbSetup,
    /// The password or token (never logged).
    secret: Option<String>,
    names: Names,
    queue: Queue,
    market: Option<RingConsumer<EngineEvent>>,
    orders: Option<OrderFeed>,
    stats: Arc<SinkStats>,
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
        let legacy = spill.files().map(PathBuf::from).collect();
        stats.recovered.add(spill.rows());
        stats.batch_rows.set(setup.batch_rows as u64);
        let queue = Queue {
            memory: VecDeque::with_capacity(setup.batch_rows * 2),
            memory_rows: setup.memory_rows,
            spill,
            draining: None,
            legacy,
            taken: 0,
            done: 0,
            marks: VecDeque::new(),
        };
        queue.gauges(&stats);
        Ok(Self {
            setup,
            secret,
            names,
            queue,
            market,
            orders,
            stats,
        })
    }

    /// Starts both threads (agents idling by `[questdb.idle]`); the handle joins them
    /// (the sender thread joins the tap thread before its last send).
    pub fn spawn(self, stop: Arc<AtomicBool>) -> Result<ThreadHandle, AgentError> {
        let version = if self.setup.protocol_version == 2 {
            questdb::ingress::ProtocolVersion::V2
        } else {
            questdb::ingress::ProtocolVersion::V1
        };
        let idle = self.setup.idle;
        let queue = Arc::new(Mutex::new(self.queue));
        let journal = self.orders.as_ref().map(|f| Arc::clone(&f.journal));
        let tap = Tap {
            market: self.market,
            events: Vec::with_capacity(RING_BATCH),
            rows: Vec::with_capacity(RING_BATCH),
            orders: self.orders,
            queue: Arc::clone(&queue),
            stats: Arc::clone(&self.stats),
            stop: Arc::clone(&stop),
            drained: false,
            quiet_since: None,
        };
        let tap_thread = spawn_agent(tap, AgentSpec::new("questdb-tap", idle, &stop))?;
        let now = Instant::now();
        let out = Out {
            backoff: self.setup.retry_initial,
            batch: Vec::with_capacity(self.setup.batch_rows),
            setup: self.setup,
            secret: self.secret,
            names: self.names,
            sender: None,
            buf: Buffer::new(version),
            queue,
            stats: self.stats,
            next_try: now,
            last_flush: now,
            rejected: None,
            rng: 0x2545_F491_4F6C_DD1D,
            tap: Some(tap_thread),
            journal,
        };
        spawn_agent(out, AgentSpec::new("questdb-sink", idle, &stop))
    }
}

/// The `questdb-tap` thread: takes rows in, never waits on the network.
struct Tap {
    market: Option<RingConsumer<EngineEvent>>,
    events: Vec<EngineEvent>,
    rows: Vec<SinkRow>,
    orders: Option<OrderFeed>,
    queue: Arc<Mutex<Queue>>,
    stats: Arc<SinkStats>,
    stop: Arc<AtomicBool>,
    /// The last poll found nothing while stopping.
    drained: bool,
    /// Since when the tap has been empty while stopping.
    quiet_since: Option<Instant>,
}

impl Agent for Tap {
    fn name(&self) -> &str {
        "questdb-tap"
    }

    fn poll(&mut self) -> usize {
        let stopping = self.stop.load(Ordering::Acquire);
        let worked = self.take_market() + self.take_orders(stopping);
        if worked > 0 {
            self.quiet_since = None;
            self.drained = false;
            return worked;
        }
        self.flush_spill();
        self.drained = stopping;
        0
    }

    /// After a poll that found nothing: once the engine has gone, or the tap stayed
    /// empty for [`STOP_QUIET`].
    fn ready_to_stop(&mut self) -> bool {
        if !self.drained {
            return false;
        }
        let gone = self.market.as_ref().is_none_or(|r| r.is_abandoned() && r.is_empty());
        let quiet = *self.quiet_since.get_or_insert_with(Instant::now);
        gone || quiet.elapsed() >= STOP_QUIET
    }
}

impl Tap {
    /// Takes what the engine handed over (its recorder ring: only stored events).
    fn take_market(&mut self) -> usize {
        let Some(ring) = self.market.as_mut() else { return 0 };
        self.events.clear();
        self.rows.clear();
        let n = ring.pop_batch(&mut self.events, RING_BATCH);
        self.stats.tap_rows.set(ring.len() as u64);
        // The engine never waits: what did not fit in the ring is counted there.
        self.stats.upstream_missed.set(ring.stats().dropped.get());
        self.rows.extend(self.events.iter().filter_map(SinkRow::from_market));
        if !self.rows.is_empty() {
            let mut q = self.queue.lock();
            for row in &self.rows {
                if let Some(c) = self.stats.emitted.get(row.table().index()) {
                    c.inc();
                }
                q.push(*row, &self.stats);
            }
            q.gauges(&self.stats);
        }
        n
    }

    /// Reads order events the journal has made durable since the last poll.
    fn take_orders(&mut self, now_anyway: bool) -> usize {
        let Some(feed) = self.orders.as_mut() else { return 0 };
        let now = Instant::now();
        if now < feed.next_poll && !now_anyway {
            return 0;
        }
        feed.next_poll = now + ORDER_POLL;
        let rows = &mut self.rows;
        rows.clear();
        let head = feed.journal.head.get();
        let polled = feed.tailer.poll(head, |seq, payload| {
            match record::decode(payload) {
                Ok(Record::Step { events, .. }) => rows.extend(events.iter().filter_map(SinkRow::from_order)),
                Ok(Record::Start(_) | Record::Owned(_)) => {}
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
        let n = self.rows.len();
        if n > 0 {
            let mut q = self.queue.lock();
            for row in &self.rows {
                if let Some(c) = self.stats.emitted.get(row.table().index()) {
                    c.inc();
                }
                q.push(*row, &self.stats);
            }
            let taken = q.taken;
            q.marks.push_back((taken, position));
            q.gauges(&self.stats);
        }
        n
    }

    /// Hands buffered spill rows to the OS while idle.
    fn flush_spill(&mut self) {
        let mut q = self.queue.lock();
        if let Err(e) = q.spill.flush() {
            report_lost(&self.stats, &e);
        }
        q.gauges(&self.stats);
    }
}

/// The `questdb-sink` thread: sends batches from the front of the queue.
struct Out {
    setup: QuestDbSetup,
    secret: Option<String>,
    names: Names,
    sender: Option<Sender>,
    buf: Buffer,
    /// Copies of the rows being sent (they stay at the front of the queue until stored).
    batch: Vec<SinkRow>,
    queue: Arc<Mutex<Queue>>,
    stats: Arc<SinkStats>,
    backoff: Duration,
    next_try: Instant,
    last_flush: Instant,
    rejected: Option<BufWriter<File>>,
    rng: u64,
    /// The tap thread, joined before the last send.
    tap: Option<ThreadHandle>,
    /// The order journal's counters when order events are exported: this thread (the
    /// only writer) moves its retention hold forward as positions are saved.
    journal: Option<Arc<JournalStats>>,
}

impl Agent for Out {
    fn name(&self) -> &str {
        "questdb-sink"
    }

    fn poll(&mut self) -> usize {
        let sent = self.maybe_send(false, true);
        self.gauges();
        usize::from(sent)
    }

    /// Sends until the tap thread has ended (it drains its ring first).
    fn ready_to_stop(&mut self) -> bool {
        self.tap.as_ref().is_none_or(ThreadHandle::is_finished)
    }

    fn on_close(&mut self) {
        if let Some(tap) = self.tap.take() {
            if let Err(e) = tap.join() {
                tracing::error!(error = %e, "questdb sink: the tap thread panicked");
            }
        }
        self.shutdown();
    }
}

impl Out {
    /// Sends a batch when one is due and the back-off allows; `load_spill`: load the
    /// oldest spill file when memory is empty. Returns whether a send was tried.
    fn maybe_send(&mut self, force: bool, load_spill: bool) -> bool {
        let now = Instant::now();
        if now < self.next_try {
            return false;
        }
        {
            let mut q = self.queue.lock();
            if load_spill {
                q.refill(&self.stats);
            }
            if q.memory.is_empty() {
                return false;
            }
            let due = force
                || q.memory.len() >= self.setup.batch_rows
                || q.draining.is_some()
                || now.duration_since(self.last_flush) >= self.setup.flush_interval;
            if !due {
                return false;
            }
            let n = q.memory.len().min(self.setup.batch_rows);
            self.batch.clear();
            self.batch.extend(q.memory.iter().take(n).copied());
        }
        self.send();
        true
    }

    fn send(&mut self) {
        self.buf.clear();
        let mut refused = Vec::new();
        for (i, row) in self.batch.iter().enumerate() {
            let _ = self.buf.set_marker();
            if let Err(e) = write_row(&mut self.buf, row, &self.names) {
                let _ = self.buf.rewind_to_marker();
                refused.push((i, e.to_string()));
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
                return self.isolate();
            }
            // The connection may be half-broken: start a new one next time.
            self.sender = None;
            return self.failed(&e.to_string());
        }
        self.batch_done(refused);
    }

    /// The batch is stored, except the rows `refused` names (kept aside).
    fn batch_done(&mut self, refused: Vec<(usize, String)>) {
        let mut refused = refused.into_iter().peekable();
        for (i, row) in self.batch.iter().enumerate() {
            match refused.next_if(|r| r.0 == i) {
                Some((_, why)) => reject(&self.setup, &mut self.rejected, &self.stats, row, &why),
                None => {
                    self.stats.rows_sent.inc();
                    if let Some(c) = self.stats.stored.get(row.table().index()) {
                        c.inc();
                    }
                }
            }
        }
        self.stats.batches.inc();
        self.stats.connected.set(1);
        let position = {
            let mut q = self.queue.lock();
            let p = q.complete(self.batch.len());
            q.gauges(&self.stats);
            p
        };
        self.batch.clear();
        self.backoff = self.setup.retry_initial;
        self.last_flush = Instant::now();
        if let Some(p) = position {
            self.save_position(p);
        }
    }

    /// Sends the batch one row at a time after the server refused a line of it: the
    /// rows it refuses (it names the line) are kept in `rejected.rows`, the rest is
    /// stored. Any other failure stops the pass with nothing set aside: the batch is
    /// retried whole later. Re-sent rows are harmless (DEDUP keys).
    fn isolate(&mut self) {
        let mut refused = Vec::new();
        for i in 0..self.batch.len() {
            let Some(row) = self.batch.get(i).copied() else { break };
            self.buf.clear();
            if let Err(e) = write_row(&mut self.buf, &row, &self.names) {
                refused.push((i, e.to_string()));
                continue;
            }
            let Some(sender) = self.sender.as_mut() else {
                return self.failed("no connection");
            };
            match sender.flush(&mut self.buf) {
                Ok(()) => {}
                Err(e) if refuses_line(&e) => refused.push((i, e.to_string())),
                Err(e) => {
                    self.sender = None;
                    return self.failed(&e.to_string());
                }
            }
        }
        self.batch_done(refused);
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

    /// Saves the journal position up to which every order event is stored.
    fn save_position(&self, (seq, hash): (u64, Hash)) {
        let path = self.setup.spill_dir.join("orders.position");
        let tmp = self.setup.spill_dir.join("orders.position.tmp");
        let saved = std::fs::write(&tmp, format!("{seq} {}\n", hex(&hash))).and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = saved {
            tracing::warn!(error = %e, "questdb sink: cannot save the order journal position");
        }
        // Journal retention may now remove what is before it.
        if let Some(journal) = &self.journal {
            journal.export_hold.set(seq.saturating_add(1));
        }
    }

    fn gauges(&self) {
        self.queue.lock().gauges(&self.stats);
    }

    /// At stop (the tap thread has finished): what is in memory is sent while the
    /// server takes it, then whatever is left goes to the spill files.
    fn shutdown(&mut self) {
        self.next_try = Instant::now();
        loop {
            let before = self.queue.lock().memory.len();
            if before == 0 || !self.maybe_send(true, false) {
                break;
            }
            if self.queue.lock().memory.len() >= before {
                break;
            }
        }
        let mut q = self.queue.lock();
        // Rows of a file being drained are still in that file; the others are spilled.
        let keep = q.draining.as_ref().map_or(0, |d| d.left).min(q.memory.len());
        let rest: Vec<SinkRow> = q.memory.drain(keep..).collect();
        q.memory.clear();
        q.draining = None;
        for row in &rest {
            if let Err(e) = q.spill.append(row) {
                report_lost(&self.stats, &e);
            } else {
                self.stats.spilled_rows.inc();
            }
        }
        if let Err(e) = q.spill.flush() {
            report_lost(&self.stats, &e);
        }
        q.gauges(&self.stats);
        self.stats.spill_rows.set(q.spill.rows() + keep as u64);
    }
}

/// Rows the encoder or the server refused are kept, not lost: `rejected.rows` in the
/// spill directory, same format as spill files.
fn reject(setup: &QuestDbSetup, file: &mut Option<BufWriter<File>>, stats: &SinkStats, row: &SinkRow, why: &str) {
    stats.rejected.inc();
    tracing::error!(error = %why, "questdb sink: a row was refused; kept in rejected.rows");
    if file.is_none() {
        let path = setup.spill_dir.join("rejected.rows");
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(f) => *file = Some(BufWriter::new(f)),
            Err(e) => tracing::error!(error = %e, "questdb sink: cannot open rejected.rows"),
        }
    }
    if let Some(w) = file.as_mut() {
        let written = postcard::to_io(row, &mut *w).is_ok() && w.flush().is_ok();
        if !written {
            tracing::error!("questdb sink: cannot write rejected.rows");
        }
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
