//! Zerodha Kite Connect ticker: binary market-data frames.
//!
//! Layout (all integers big-endian), as documented by Kite Connect v3 "WebSocket
//! streaming":
//! - a 1-byte frame is a heartbeat, not a packet count;
//! - otherwise 2 bytes packet count, then per packet 2 bytes length + the packet;
//! - LTP packet, 8 bytes: token, last price;
//! - index quote 28 / index full 32: token, LTP, high, low, open, close, change
//!   (+ exchange timestamp in the full packet);
//! - quote, 44 bytes: token, LTP, last traded qty, avg price, volume, total buy qty,
//!   total sell qty, open, high, low, close;
//! - full, 184 bytes: quote + last trade time, OI, OI day high, OI day low, exchange
//!   timestamp, then 10 depth entries (5 bids, 5 asks) of 12 bytes: qty (4), price (4),
//!   orders (2), 2 bytes padding.
//!
//! Prices are signed and in the segment's unit: the divisor is 10^7 for currency
//! derivatives (`token & 0xFF == 3`), 10^4 for BSE currency (6), else 100 (paise).
//! Volumes, quantities and timestamps are unsigned. A packet of a length we do not
//! know is skipped by its length prefix, so a new mode never breaks the feed.
//!
//! Kite sends cumulative volume, not trades: a trade tick is emitted when an
//! instrument's volume rises (size = the increase), so repeated quote packets never
//! double-count. LTP-only and index packets carry no size and no volume: they give the
//! last price (`LastPrice`, quantity zero), never a trade nobody saw.
//!
//! A quote/full packet also reports the last trade itself (price, quantity and, in
//! full mode, its time). When that is not already told by a volume-derived trade (the
//! first packet after subscribing, whose volume has no baseline yet), it becomes a
//! `LastPrice` tick: the quote shows the last price at once, and no trade is
//! invented. The day open/high/low and previous close of quote, full and index
//! packets become a `DayStats` tick whenever they change.

use stocksblitz_engine::fixed::rescale;
use stocksblitz_engine::tick::{BookFlags, Tick, TickData};
use stocksblitz_engine::{Aggressor, Price, Qty, Side, UnixNanos};

use crate::symbols::{SymbolMap, VenueInstrument};

pub const LTP_LEN: usize = 8;
pub const INDEX_QUOTE_LEN: usize = 28;
pub const INDEX_FULL_LEN: usize = 32;
pub const QUOTE_LEN: usize = 44;
pub const FULL_LEN: usize = 184;
const DEPTH_OFFSET: usize = 64;
const DEPTH_ENTRY: usize = 12;
const DEPTH_LEVELS: usize = 5;

/// Why a binary frame could not be decoded (the rest of the frame is abandoned; the
/// feed goes on with the next frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KiteError {
    #[error("empty frame")]
    Empty,
    #[error("frame ends inside packet {packet} (needs {needed} bytes, {available} left)")]
    Truncated {
        packet: usize,
        needed: usize,
        available: usize,
    },
    #[error("price {raw} of token {token} cannot be expressed at the instrument's precision")]
    Price { token: u32, raw: i64 },
    #[error("{0} trailing bytes after the last packet")]
    Trailing(usize),
}

/// What one frame contained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameSummary {
    pub heartbeat: bool,
    pub packets: usize,
    /// Packets for tokens we do not trade (subscribed by someone else, or stale).
    pub unknown_tokens: usize,
    /// Packets of a length this decoder does not know, skipped.
    pub unknown_lengths: usize,
}

#[inline]
fn be_u32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b1, c, d]) => u32::from_be_bytes([a, b1, c, d]),
        _ => 0,
    }
}

#[inline]
fn be_i32(b: &[u8], at: usize) -> i64 {
    i64::from(be_u32(b, at) as i32)
}

#[inline]
fn be_u16(b: &[u8], at: usize) -> usize {
    match b.get(at..at + 2) {
        Some(&[a, b1]) => usize::from(u16::from_be_bytes([a, b1])),
        _ => 0,
    }
}

/// Decimal places of the segment's price unit.
#[inline]
pub const fn price_scale_of_token(token: u32) -> u8 {
    match token & 0xFF {
        3 => 7,
        6 => 4,
        _ => 2,
    }
}

/// Decodes frames into ticks, remembering each instrument's cumulative volume.
#[derive(Debug, Clone)]
pub struct KiteDecoder {
    tokens: SymbolMap<u32>,
    /// Last cumulative volume per instrument id (index), `u32::MAX + 1` = unseen.
    volume: Vec<i64>,
    /// Last trade reported per instrument (raw price, qty, time), to tell it once.
    reported: Vec<Option<(i64, i64, u32)>>,
    /// Day open/high/low/close last told per instrument (raw).
    day: Vec<Option<[i64; 4]>>,
}

impl KiteDecoder {
    /// `tokens` maps Kite instrument tokens to our instruments; `instruments` is the
    /// registry size (volume state is indexed by id; allocated here, once).
    pub fn new(tokens: SymbolMap<u32>, instruments: usize) -> Self {
        Self {
            tokens,
            volume: vec![-1; instruments],
            reported: vec![None; instruments],
            day: vec![None; instruments],
        }
    }

    /// A `DayStats` tick when the packet's open/high/low/close (raw, in that order)
    /// changed since the last one told; all four are converted before anything is
    /// emitted.
    fn day_stats(
        &mut self,
        inst: VenueInstrument,
        token: u32,
        ohlc: [i64; 4],
        tick: &impl Fn(TickData) -> Tick,
        out: &mut impl FnMut(Tick),
    ) -> Result<(), KiteError> {
        let Some(seen) = self.day.get_mut(inst.id.index()) else {
            return Ok(());
        };
        if *seen == Some(ohlc) || ohlc == [0; 4] {
            return Ok(());
        }
        let scale = price_scale_of_token(token);
        let mut px = [Price::ZERO; 4];
        for (slot, raw) in px.iter_mut().zip(ohlc) {
            *slot = rescale(raw, scale, inst.price_scale)
                .map(Price)
                .map_err(|_| KiteError::Price { token, raw })?;
        }
        *seen = Some(ohlc);
        let [open, high, low, close] = px;
        out(tick(TickData::DayStats { open, high, low, close }));
        Ok(())
    }

    fn price(&self, inst: VenueInstrument, token: u32, raw: i64) -> Result<Price, KiteError> {
        rescale(raw, price_scale_of_token(token), inst.price_scale)
            .map(Price)
            .map_err(|_| KiteError::Price { token, raw })
    }

    fn qty(inst: VenueInstrument, raw: i64) -> Qty {
        Qty(rescale(raw, 0, inst.qty_scale).unwrap_or(i64::MAX))
    }

    /// Decodes one binary frame received at `recv`, calling `out` for every tick.
    pub fn decode(
        &mut self,
        frame: &[u8],
        recv: UnixNanos,
        out: &mut impl FnMut(Tick),
    ) -> Result<FrameSummary, KiteError> {
        let mut summary = FrameSummary::default();
        match frame.len() {
            0 => return Err(KiteError::Empty),
            1 => {
                summary.heartbeat = true;
                return Ok(summary);
            }
            _ => {}
        }
        let count = be_u16(frame, 0);
        let mut at = 2;
        for packet in 0..count {
            let Some(len_bytes) = frame.get(at..at + 2) else {
                return Err(KiteError::Truncated {
                    packet,
                    needed: 2,
                    available: frame.len().saturating_sub(at),
                });
            };
            let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
            at += 2;
            let Some(p) = frame.get(at..at + len) else {
                return Err(KiteError::Truncated {
                    packet,
                    needed: len,
                    available: frame.len().saturating_sub(at),
                });
            };
            at += len;
            summary.packets += 1;
            if !matches!(len, LTP_LEN | INDEX_QUOTE_LEN | INDEX_FULL_LEN | QUOTE_LEN | FULL_LEN) {
                summary.unknown_lengths += 1;
                continue;
            }
            let token = be_u32(p, 0);
            let Some(inst) = self.tokens.get(&token) else {
                summary.unknown_tokens += 1;
                continue;
            };
            self.packet(inst, token, p, recv, out)?;
        }
        if at != frame.len() {
            return Err(KiteError::Trailing(frame.len() - at));
        }
        Ok(summary)
    }

    fn packet(
        &mut self,
        inst: VenueInstrument,
        token: u32,
        p: &[u8],
        recv: UnixNanos,
        out: &mut impl FnMut(Tick),
    ) -> Result<(), KiteError> {
        let secs = |at: usize| match be_u32(p, at) {
            0 => UnixNanos::UNKNOWN,
            s => UnixNanos(i64::from(s) * UnixNanos::NANOS_PER_SEC),
        };
        let ltp = self.price(inst, token, be_i32(p, 4))?;
        let exchange_ts = match p.len() {
            INDEX_FULL_LEN => secs(28),
            FULL_LEN => secs(60),
            _ => UnixNanos::UNKNOWN,
        };
        let tick = |data| Tick {
            exchange_ts,
            recv_ts: recv,
            instrument: inst.id,
            data,
        };
        let trade = |qty| TickData::Trade {
            price: ltp,
            qty,
            trade_id: 0,
            aggressor: Aggressor::Unknown,
        };
        if p.len() < QUOTE_LEN {
            // LTP and index packets: a price, no size and no volume, so nothing says a
            // trade happened: the price is the last price, never a made-up trade.
            out(tick(TickData::LastPrice {
                price: ltp,
                qty: Qty::ZERO,
            }));
            if p.len() >= INDEX_QUOTE_LEN {
                // Index: high 8, low 12, open 16, close 20.
                let ohlc = [be_i32(p, 16), be_i32(p, 8), be_i32(p, 12), be_i32(p, 20)];
                self.day_stats(inst, token, ohlc, &tick, out)?;
            }
            return Ok(());
        }
        // Quote/full: open 28, high 32, low 36, close 40.
        let ohlc = [be_i32(p, 28), be_i32(p, 32), be_i32(p, 36), be_i32(p, 40)];
        let volume = i64::from(be_u32(p, 16));
        let (last_qty, trade_time_raw) = (
            i64::from(be_u32(p, 8)),
            if p.len() == FULL_LEN { be_u32(p, 44) } else { 0 },
        );
        let trade_time = if p.len() == FULL_LEN {
            secs(44)
        } else {
            UnixNanos::UNKNOWN
        };
        let mut traded = false;
        if let Some(prev) = self.volume.get_mut(inst.id.index()) {
            if *prev >= 0 && volume > *prev {
                traded = true;
                out(Tick {
                    exchange_ts: trade_time.or(exchange_ts),
                    ..tick(trade(Self::qty(inst, volume - *prev)))
                });
            }
            *prev = volume;
        }
        let last = (be_i32(p, 4), last_qty, trade_time_raw);
        if let Some(seen) = self.reported.get_mut(inst.id.index()) {
            // The last trade as reported, when no trade tick told it: the first
            // packet (no volume baseline) or a changed report without new volume.
            // Nothing traded yet today (price and size 0): nothing to tell.
            if !traded && *seen != Some(last) && (last.0, last.1) != (0, 0) {
                out(Tick {
                    exchange_ts: trade_time,
                    ..tick(TickData::LastPrice {
                        price: ltp,
                        qty: Self::qty(inst, last_qty),
                    })
                });
            }
            *seen = Some(last);
        }
        self.day_stats(inst, token, ohlc, &tick, out)?;
        if p.len() == FULL_LEN {
            self.depth(inst, token, p, &tick, out)?;
        }
        Ok(())
    }

    /// The 5x2 depth as one book snapshot batch (empty levels omitted).
    fn depth(
        &self,
        inst: VenueInstrument,
        token: u32,
        p: &[u8],
        tick: &impl Fn(TickData) -> Tick,
        out: &mut impl FnMut(Tick),
    ) -> Result<(), KiteError> {
        let mut levels = [(Side::Buy, Price::ZERO, Qty::ZERO); 2 * DEPTH_LEVELS];
        let mut n = 0;
        for i in 0..2 * DEPTH_LEVELS {
            let at = DEPTH_OFFSET + i * DEPTH_ENTRY;
            let qty = i64::from(be_u32(p, at));
            let raw = be_i32(p, at + 4);
            if qty == 0 || raw <= 0 {
                continue;
            }
            let side = if i < DEPTH_LEVELS { Side::Buy } else { Side::Sell };
            if let Some(slot) = levels.get_mut(n) {
                *slot = (side, self.price(inst, token, raw)?, Self::qty(inst, qty));
                n += 1;
            }
        }
        let snap = BookFlags::SNAPSHOT;
        if n == 0 {
            out(tick(TickData::BookDelta {
                side: Side::Buy,
                price: Price::ZERO,
                qty: Qty::ZERO,
                update_id: 0,
                flags: snap.with(BookFlags::CLEAR).with(BookFlags::END_OF_BATCH),
            }));
            return Ok(());
        }
        for (k, &(side, price, qty)) in levels.iter().take(n).enumerate() {
            let mut flags = snap;
            if k == 0 {
                flags = flags.with(BookFlags::CLEAR);
            }
            if k + 1 == n {
                flags = flags.with(BookFlags::END_OF_BATCH);
            }
            out(tick(TickData::BookDelta {
                side,
                price,
                qty,
                update_id: 0,
                flags,
            }));
        }
        Ok(())
    }
}

/// Builders for frames, shared by the feed simulator and tests.
pub mod encode {
    use super::*;

    /// A frame of `packets`.
    pub fn frame(packets: &[Vec<u8>]) -> Vec<u8> {
        let mut f = Vec::with_capacity(2 + packets.iter().map(|p| p.len() + 2).sum::<usize>());
        f.extend_from_slice(&(packets.len() as u16).to_be_bytes());
        for p in packets {
            f.extend_from_slice(&(p.len() as u16).to_be_bytes());
            f.extend_from_slice(p);
        }
        f
    }

    pub fn ltp(token: u32, price: i32) -> Vec<u8> {
        let mut p = token.to_be_bytes().to_vec();
        p.extend_from_slice(&price.to_be_bytes());
        p
    }

    /// Fields of a quote/full packet.
    #[derive(Debug, Clone, Default)]
    pub struct Quote {
        pub token: u32,
        pub ltp: i32,
        pub last_qty: u32,
        pub avg_price: i32,
        pub volume: u32,
        pub buy_qty: u32,
        pub sell_qty: u32,
        pub ohlc: [i32; 4],
        pub last_trade_time: u32,
        pub oi: [u32; 3],
        pub exchange_time: u32,
        /// (qty, price, orders): 5 bids then 5 asks.
        pub depth: [(u32, i32, u16); 10],
    }

    pub fn quote(q: &Quote) -> Vec<u8> {
        let mut p = Vec::with_capacity(FULL_LEN);
        p.extend_from_slice(&q.token.to_be_bytes());
        p.extend_from_slice(&q.ltp.to_be_bytes());
        for v in [q.last_qty, q.avg_price as u32, q.volume, q.buy_qty, q.sell_qty] {
            p.extend_from_slice(&v.to_be_bytes());
        }
        for v in q.ohlc {
            p.extend_from_slice(&v.to_be_bytes());
        }
        p
    }

    pub fn full(q: &Quote) -> Vec<u8> {
        let mut p = quote(q);
        p.extend_from_slice(&q.last_trade_time.to_be_bytes());
        for v in q.oi {
            p.extend_from_slice(&v.to_be_bytes());
        }
        p.extend_from_slice(&q.exchange_time.to_be_bytes());
        for (qty, price, orders) in q.depth {
            p.extend_from_slice(&qty.to_be_bytes());
            p.extend_from_slice(&price.to_be_bytes());
            p.extend_from_slice(&orders.to_be_bytes());
            p.extend_from_slice(&[0, 0]);
        }
        p
    }

    /// Index quote (28) or, with `exchange_time`, index full (32).
    pub fn index(token: u32, last: i32, ohlc: [i32; 4], change: i32, exchange_time: Option<u32>) -> Vec<u8> {
        let mut p = ltp(token, last);
        for v in ohlc {
            p.extend_from_slice(&v.to_be_bytes());
        }
        p.extend_from_slice(&change.to_be_bytes());
        if let Some(t) = exchange_time {
            p.extend_from_slice(&t.to_be_bytes());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::encode::*;
    use super::*;
    use proptest::prelude::*;
    use stocksblitz_engine::InstrumentId;

    const RELIANCE: u32 = 738_561; // NSE equity: segment 1, paise.
    const USDINR: u32 = 0x0001_2303; // segment 3 (CDS): 10^7 divisor.
    const NIFTY: u32 = 256_265; // index token.

    fn decoder() -> KiteDecoder {
        let mut m = SymbolMap::new();
        let v = |id, price_scale| VenueInstrument {
            id: InstrumentId(id),
            price_scale,
            qty_scale: 0,
        };
        m.insert(RELIANCE, v(0, 2));
        m.insert(USDINR, v(1, 4));
        m.insert(NIFTY, v(2, 2));
        KiteDecoder::new(m, 3)
    }

    fn decode(d: &mut KiteDecoder, frame: &[u8]) -> (Result<FrameSummary, KiteError>, Vec<Tick>) {
        let mut ticks = Vec::new();
        let r = d.decode(frame, UnixNanos(7), &mut |t| ticks.push(t));
        (r, ticks)
    }

    fn full_quote(volume: u32) -> Quote {
        let mut q = Quote {
            token: RELIANCE,
            ltp: 245_005,
            last_qty: 10,
            volume,
            last_trade_time: 1_700_000_000,
            exchange_time: 1_700_000_001,
            ohlc: [244_000, 246_000, 243_500, 244_900],
            ..Quote::default()
        };
        for i in 0..5 {
            q.depth[i] = (100 + i as u32, 245_000 - 5 * i as i32, 3);
            q.depth[5 + i] = (200 + i as u32, 245_010 + 5 * i as i32, 4);
        }
        q
    }

    #[test]
    fn heartbeat_is_not_a_packet_count() {
        let (r, ticks) = decode(&mut decoder(), &[0]);
        assert!(r.unwrap().heartbeat);
        assert!(ticks.is_empty());
    }

    #[test]
    fn ltp_and_index_packets() {
        let mut d = decoder();
        let frame = frame(&[
            ltp(RELIANCE, 245_005),
            index(NIFTY, 1_950_010, [0; 4], -5, Some(1_700_000_002)),
        ]);
        let (r, ticks) = decode(&mut d, &frame);
        assert_eq!(r.unwrap().packets, 2);
        assert_eq!(ticks.len(), 2);
        // A last price each, never a trade (no size, no volume).
        assert_eq!(
            ticks[0].data,
            TickData::LastPrice {
                price: Price(245_005),
                qty: Qty(0),
            }
        );
        assert!(
            ticks.iter().all(|t| !matches!(t.data, TickData::Trade { .. })),
            "{ticks:?}"
        );
        assert_eq!(ticks[0].exchange_ts, UnixNanos::UNKNOWN);
        assert_eq!(ticks[1].instrument, InstrumentId(2));
        assert!(matches!(ticks[1].data, TickData::LastPrice { qty: Qty(0), .. }));
        assert_eq!(
            ticks[1].exchange_ts,
            UnixNanos(1_700_000_002 * UnixNanos::NANOS_PER_SEC)
        );
    }

    #[test]
    fn full_packet_gives_trades_from_volume_and_a_depth_snapshot() {
        let mut d = decoder();
        let (r, first) = decode(&mut d, &frame(&[full(&full_quote(1_000))]));
        r.unwrap();
        // First sighting: no trade (unknown previous volume) but the reported last
        // trade, stamped with its time; the day statistics; 10 depth levels.
        assert_eq!(first.len(), 12);
        assert_eq!(
            first[0].data,
            TickData::LastPrice {
                price: Price(245_005),
                qty: Qty(10)
            }
        );
        assert_eq!(
            first[0].exchange_ts,
            UnixNanos(1_700_000_000 * UnixNanos::NANOS_PER_SEC)
        );
        assert_eq!(
            first[1].data,
            TickData::DayStats {
                open: Price(244_000),
                high: Price(246_000),
                low: Price(243_500),
                close: Price(244_900)
            }
        );
        let first = &first[2..];
        let TickData::BookDelta {
            side,
            price,
            qty,
            flags,
            ..
        } = first[0].data
        else {
            panic!("delta")
        };
        assert_eq!((side, price, qty), (Side::Buy, Price(245_000), Qty(100)));
        assert!(flags.contains(BookFlags::CLEAR) && flags.contains(BookFlags::SNAPSHOT));
        let TickData::BookDelta { side, price, flags, .. } = first[9].data else {
            panic!("delta")
        };
        assert_eq!((side, price), (Side::Sell, Price(245_030)));
        assert!(flags.contains(BookFlags::END_OF_BATCH));
        assert_eq!(
            first[0].exchange_ts,
            UnixNanos(1_700_000_001 * UnixNanos::NANOS_PER_SEC)
        );

        // Volume up by 25: one trade of 25 at the LTP, stamped with the trade time.
        let (_, second) = decode(&mut d, &frame(&[full(&full_quote(1_025))]));
        assert!(matches!(
            second[0].data,
            TickData::Trade {
                price: Price(245_005),
                qty: Qty(25),
                ..
            }
        ));
        assert_eq!(
            second[0].exchange_ts,
            UnixNanos(1_700_000_000 * UnixNanos::NANOS_PER_SEC)
        );
        assert_eq!(second.len(), 11, "the trade tells the last price; day unchanged");
        // Same volume again (a quote change only): no trade, nothing new to tell.
        let (_, third) = decode(&mut d, &frame(&[full(&full_quote(1_025))]));
        assert_eq!(third.len(), 10, "depth only");
        assert!(third.iter().all(|t| matches!(t.data, TickData::BookDelta { .. })));
        // A new high with the same last trade: day statistics only.
        let mut q = full_quote(1_025);
        q.ohlc[1] = 246_500;
        let (_, fourth) = decode(&mut d, &frame(&[full(&q)]));
        assert!(matches!(
            fourth[0].data,
            TickData::DayStats {
                high: Price(246_500),
                ..
            }
        ));
        assert_eq!(fourth.len(), 11);
    }

    #[test]
    fn quote_packet_and_segment_divisors() {
        let mut d = decoder();
        let q = Quote {
            token: USDINR,
            ltp: 832_500_000, // 83.25 at 10^7
            volume: 5,
            ..Quote::default()
        };
        let (r, t) = decode(&mut d, &frame(&[quote(&q)]));
        r.unwrap();
        // First sighting sets the volume baseline: no trade, the last price is told
        // (a quote packet has no trade time).
        assert_eq!(t.len(), 1);
        assert_eq!(
            t[0].data,
            TickData::LastPrice {
                price: Price(832_500),
                qty: Qty(0)
            }
        );
        assert_eq!(t[0].exchange_ts, UnixNanos::UNKNOWN);
        let (_, t) = decode(&mut d, &frame(&[quote(&Quote { volume: 9, ..q.clone() })]));
        assert!(matches!(
            t[0].data,
            TickData::Trade {
                price: Price(832_500),
                qty: Qty(4),
                ..
            }
        ));
        // 83.2512500 does not fit the instrument's 4 decimals: an error, never rounding.
        let (r, _) = decode(&mut d, &frame(&[quote(&Quote { ltp: 832_512_500, ..q })]));
        assert!(matches!(r, Err(KiteError::Price { token: USDINR, .. })));
        assert_eq!(price_scale_of_token(USDINR), 7);
        assert_eq!(price_scale_of_token(RELIANCE), 2);
        assert_eq!(price_scale_of_token(0x0000_0106), 4);
    }

    #[test]
    fn unknown_lengths_and_tokens_are_skipped() {
        let mut d = decoder();
        let odd = vec![0u8; 13];
        let frame = frame(&[odd, ltp(999, 1), ltp(RELIANCE, 100)]);
        let (r, ticks) = decode(&mut d, &frame);
        let s = r.unwrap();
        assert_eq!((s.packets, s.unknown_lengths, s.unknown_tokens), (3, 1, 1));
        assert_eq!(ticks.len(), 1);
    }

    #[test]
    fn truncated_and_trailing_frames_are_errors() {
        let mut d = decoder();
        let good = frame(&[full(&full_quote(1))]);
        for cut in [2, 3, 10, good.len() - 1] {
            let (r, _) = decode(&mut d, &good[..cut]);
            assert!(matches!(r, Err(KiteError::Truncated { .. })), "cut {cut}: {r:?}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode(&mut d, &long).0, Err(KiteError::Trailing(1)));
        assert_eq!(decode(&mut d, &[]).0, Err(KiteError::Empty));
        // A zero packet count with no body is a valid, empty frame.
        assert_eq!(decode(&mut d, &[0, 0]).0.map(|s| s.packets), Ok(0));
    }

    #[test]
    fn negative_prices_are_signed() {
        let mut d = decoder();
        let (_, t) = decode(&mut d, &frame(&[ltp(RELIANCE, -150)]));
        assert!(matches!(t[0].data, TickData::LastPrice { price: Price(-150), .. }));
    }

    proptest! {
        /// No input panics, and ticks only ever name known instruments.
        #[test]
        fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut d = decoder();
            let (_, ticks) = decode(&mut d, &bytes);
            prop_assert!(ticks.iter().all(|t| t.instrument.0 < 3));
        }

        /// Valid frames of random packets decode without error.
        #[test]
        fn valid_frames_decode(vols in proptest::collection::vec(0u32..1_000_000, 1..8), prices in proptest::collection::vec(1i32..10_000_000, 1..8)) {
            let mut d = decoder();
            let packets: Vec<Vec<u8>> = vols.iter().zip(prices.iter().cycle()).map(|(&v, &p)| {
                let mut q = full_quote(v);
                q.ltp = p;
                full(&q)
            }).collect();
            let (r, _) = decode(&mut d, &frame(&packets));
            prop_assert_eq!(r.map(|s| s.packets), Ok(packets.len()));
        }
    }
}
