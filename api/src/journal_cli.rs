//! `stocksblitz journal verify|dump DIR`: operators' tools on an order journal.
//! Neither modifies anything (a torn tail is reported, not cut: the engine cuts it at
//! its next start). `verify` fails (non-zero exit, the segment and byte offset on
//! stderr) on exactly what would stop start-up: damage, a broken chain, a missing
//! segment, a journal of an older format. A journal trimmed by retention is checked
//! from its first kept segment (`first_record` in the summary).

use std::path::Path;

use anyhow::Context;
use serde_json::json;
use stocksblitz_engine::journal::{self, format::hex, Record};
use stocksblitz_engine::orders::store::OrderStore;
use stocksblitz_engine::orders::OrderManager;

use crate::config::Validated;

/// Checks every checksum and the hash chain and decodes every record; given the
/// configuration, recovers as start-up would instead (newest usable snapshot, then
/// replay through the order manager). Prints a JSON summary. Fails on anything that would stop the engine's start-up.
pub fn verify(dir: &Path, config: Option<&Validated>) -> anyhow::Result<()> {
    let segments = journal::reader::segments(dir).context("listing segments")?;
    let (mut steps, mut runs, mut events) = (0u64, 0u64, 0u64);
    // Every segment, every record: checksums, the chain, decoding.
    let tail = journal::scan(dir, |seq, payload| {
        match journal::record::decode(payload) {
            Ok(Record::Start(_)) => runs += 1,
            Ok(Record::Owned(_)) => {}
            Ok(Record::Step { events: e, .. }) => {
                steps += 1;
                events += e.len() as u64;
            }
            Err(e) => {
                return Err(journal::JournalError::Undecodable {
                    seq,
                    what: e.to_string(),
                })
            }
        }
        Ok(())
    })?;
    // Then what start-up would do: newest usable snapshot, replay the rest.
    let (state_hash, snapshot, replayed_steps, times) = match config.and_then(|v| v.orders.as_ref().map(|o| (v, o))) {
        Some((v, setup)) => {
            let mut m = OrderManager::new(&v.registry, &setup.venues, &setup.rates, &setup.limits, setup.capacity);
            m.set_day_roll(setup.day_roll_secs);
            // Its ids carry the engine's shard: replay issues them again.
            if let Some(c) = &v.cluster {
                m.set_shard(c.shard).context("cluster.shard")?;
            }
            let mut store = OrderStore::new(setup.accounts.len(), setup.history_per_account);
            let r = journal::recover(dir, &mut m, &mut store)?;
            let times = json!({
                "snapshot_load_ms": r.load_time.as_millis() as u64,
                "replay_ms": r.replay_time.as_millis() as u64,
            });
            (Some(hex(&m.state_hash())), r.snapshot, Some(r.steps), Some(times))
        }
        None => (None, None, None, None),
    };
    let summary = json!({
        "status": "ok",
        "dir": dir.display().to_string(),
        "segments": segments.len(),
        // Above 1 when retention removed older segments: the chain is checked from
        // the hash that first kept segment's header continues from.
        "first_record": segments.first().map_or(1, |s| s.first_seq),
        "records": tail.records,
        "runs": runs,
        "steps": steps,
        "events": events,
        "head_hash": hex(&tail.last_hash),
        "torn_tail": tail.torn.map(|t| json!({
            "segment": t.path.display().to_string(),
            "offset": t.offset,
            "bytes": t.bytes,
        })),
        "replayed": state_hash.is_some(),
        "replayed_from_snapshot": snapshot,
        "replayed_steps": replayed_steps,
        "recovery_time": times,
        "state_hash": state_hash,
    });
    println!("{summary:#}");
    Ok(())
}

/// Prints every record as one JSON line: `{"seq":N,"record":{...}}` (prices and
/// quantities as the engine's integer mantissas).
pub fn dump(dir: &Path, from: u64, to: Option<u64>) -> anyhow::Result<()> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_err = None;
    journal::scan(dir, |seq, payload| {
        if seq < from || to.is_some_and(|t| seq > t) || write_err.is_some() {
            return Ok(());
        }
        let record = journal::record::decode(payload).map_err(|e| journal::JournalError::Undecodable {
            seq,
            what: e.to_string(),
        })?;
        if let Err(e) = writeln!(out, "{}", json!({ "seq": seq, "record": record })) {
            write_err = Some(e);
        }
        Ok(())
    })?;
    if let Some(e) = write_err {
        // A closed pipe (`| head`) is not an error worth reporting.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("writing to stdout");
        }
    }
    let _ = out.flush();
    Ok(())
}
