//! A hash of the order manager's durable state: what recovery must rebuild exactly.
//!
//! Covers every order slot and the free list (future ids), the books' queues in
//! priority order, waiting stops, accounts' limits and usage (rate buckets included),
//! positions, kill switches, the event, fill, trade and generated client id counters and
//! the limits the last run was configured with, and the instruments the engine owns
//! when not all. It leaves out the
//! market references (they come from the feed, and each journaled step carries the
//! one it saw) and scratch buffers. Off the hot path: tests, journal checkpoints.

use std::io::Write;

use crate::side::Side;

use super::manager::OrderManager;
use super::queue_book::QueueBook;

/// Feeds everything written into a SHA-256.
struct Hasher(ring::digest::Context);

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl OrderManager {
    pub fn state_hash(&self) -> [u8; 32] {
        let mut h = Hasher(ring::digest::Context::new(&ring::digest::SHA256));
        // Writing into a hasher cannot fail; an encoding error would only change the hash.
        let _ = self.fingerprint(&mut h);
        let mut out = [0; 32];
        out.copy_from_slice(h.0.finish().as_ref());
        out
    }

    fn fingerprint(&self, w: &mut Hasher) -> Result<(), postcard::Error> {
        self.pool.fingerprint(w)?;
        for book in &self.books {
            for side in [Side::Buy, Side::Sell] {
                for level in book.levels(side) {
                    postcard::to_io(&(level.price, level.qty, level.orders), &mut *w)?;
                    let mut next = QueueBook::head(level);
                    while let Some(id) = next {
                        postcard::to_io(&id, &mut *w)?;
                        next = QueueBook::next(&self.links, id);
                    }
                }
                postcard::to_io(&u8::MAX, &mut *w)?;
            }
        }
        for stops in &self.stops {
            postcard::to_io(stops.as_slice(), &mut *w)?;
        }
        postcard::to_io(self.accounts.as_slice(), &mut *w)?;
        postcard::to_io(self.positions.as_slice(), &mut *w)?;
        postcard::to_io(self.position_exposure.as_slice(), &mut *w)?;
        for (account, client_id, id) in self.client_id_list() {
            postcard::to_io(&(account, client_id, id), &mut *w)?;
        }
        postcard::to_io(
            &(
                self.global_kill,
                self.instrument_kill.as_slice(),
                self.seq,
                self.fill_seq,
            ),
            &mut *w,
        )?;
        postcard::to_io(self.trade_seq.as_slice(), &mut *w)?;
        postcard::to_io(&(self.auto_ids, self.configured.as_slice()), &mut *w)?;
        // Only when not all: the hash of an engine that owns all is what it always was.
        if let Some(owned) = self.owned() {
            postcard::to_io(&owned, &mut *w)?;
        }
        Ok(())
    }
}
