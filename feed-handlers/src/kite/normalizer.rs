//! Kite frames to ticks: binary frames through the decoder, text frames parsed and
//! counted. An instrument turns LIVE with its first packet after a (re)connect; Kite
//! has no sequence numbers, so gaps cannot be seen and staleness is the handler's
//! timer's job.

use stocksblitz_engine::{FeedStatus, Tick, UnixNanos};

use super::decode::{KiteDecoder, KiteError};
use super::text::{parse_text, KiteText, KiteTextError};
use crate::normalize::{status, Action, FrameRef};
use crate::stats::FeedStats;
use crate::symbols::SymbolMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error(transparent)]
    Binary(#[from] KiteError),
    #[error(transparent)]
    Text(#[from] KiteTextError),
    #[error("the venue reported an error")]
    Venue,
}

pub struct KiteNormalizer {
    decoder: KiteDecoder,
    live: Vec<bool>,
    tokens: Vec<stocksblitz_engine::InstrumentId>,
}

impl KiteNormalizer {
    pub fn new(tokens: SymbolMap<u32>, registry_len: usize) -> Self {
        let ids = tokens.values().map(|v| v.id).collect();
        Self {
            decoder: KiteDecoder::new(tokens, registry_len),
            live: vec![false; registry_len],
            tokens: ids,
        }
    }

    pub fn on_connected(&mut self, recv: UnixNanos, out: &mut impl FnMut(Tick)) {
        for &id in &self.tokens {
            if let Some(l) = self.live.get_mut(id.index()) {
                *l = false;
            }
            out(status(id, FeedStatus::Syncing, 0, recv));
        }
    }

    pub fn on_frame(
        &mut self,
        frame: FrameRef<'_>,
        recv: UnixNanos,
        _stats: &FeedStats,
        out: &mut impl FnMut(Tick),
    ) -> Result<Action, NormalizeError> {
        match frame {
            FrameRef::Binary(b) => {
                let live = &mut self.live;
                self.decoder.decode(b, recv, &mut |t: Tick| {
                    if let Some(l) = live.get_mut(t.instrument.index()) {
                        if !*l {
                            *l = true;
                            out(status(t.instrument, FeedStatus::Live, 0, recv));
                        }
                    }
                    out(t);
                })?;
            }
            FrameRef::Text(t) => match parse_text(t)? {
                KiteText::Error { .. } => return Err(NormalizeError::Venue),
                KiteText::Order { .. } | KiteText::Message { .. } | KiteText::Other { .. } => {}
            },
        }
        Ok(Action::None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::decode::encode;
    use super::*;
    use crate::symbols::VenueInstrument;
    use stocksblitz_engine::{InstrumentId, TickData};

    #[test]
    fn live_on_first_packet_and_text_frames() {
        let mut m = SymbolMap::new();
        m.insert(
            738_561,
            VenueInstrument {
                id: InstrumentId(0),
                price_scale: 2,
                qty_scale: 0,
            },
        );
        let mut n = KiteNormalizer::new(m, 1);
        let stats = FeedStats::default();
        let mut ticks = Vec::new();
        n.on_connected(UnixNanos(1), &mut |t| ticks.push(t));
        let frame = encode::frame(&[encode::ltp(738_561, 100), encode::ltp(738_561, 101)]);
        n.on_frame(FrameRef::Binary(&frame), UnixNanos(2), &stats, &mut |t| ticks.push(t))
            .unwrap();
        let statuses: Vec<_> = ticks
            .iter()
            .filter_map(|t| match t.data {
                TickData::Status { status, .. } => Some(status),
                _ => None,
            })
            .collect();
        assert_eq!(statuses, vec![FeedStatus::Syncing, FeedStatus::Live]);
        assert_eq!(ticks.len(), 4);
        let mut sink = |_| {};
        assert!(
            n.on_frame(FrameRef::Binary(&[0]), UnixNanos(3), &stats, &mut sink)
                .is_ok(),
            "heartbeat"
        );
        assert!(n
            .on_frame(
                FrameRef::Text(br#"{"type":"order","data":{"order_id":"1"}}"#),
                UnixNanos(3),
                &stats,
                &mut sink
            )
            .is_ok());
        assert_eq!(
            n.on_frame(
                FrameRef::Text(br#"{"type":"error","data":"bad"}"#),
                UnixNanos(3),
                &stats,
                &mut sink
            ),
            Err(NormalizeError::Venue)
        );
        assert!(n
            .on_frame(FrameRef::Binary(&[0, 1, 0]), UnixNanos(3), &stats, &mut sink)
            .is_err());
    }
}
