//! What travels on the order streams, and how a stream reply is read.
//!
//! Each stream entry has one field, [`FIELD`], holding a postcard-encoded
//! [`ToEngine`] (command stream) or [`FromEngine`] (output stream). The field's name
//! carries the format's version: a node that meets another name refuses the entry
//! (counted) rather than guessing.

use stocksblitz_engine::orders::gateway::OrderOutput;
use stocksblitz_engine::orders::{Command, OrderEvent};
use stocksblitz_engine::UnixNanos;

use crate::config::cluster::Owner;

/// The stream entry field holding the encoded message (format version 2: engines
/// announce what they own).
pub const FIELD: &str = "v2";

/// An API node to the engine.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ToEngine {
    /// A command to apply at most once. `command.request` is the API node's request
    /// id (the answer is routed back by `node` and it); the engine applies it under
    /// `command.idempotency`, which the API node always sets (the client's key, or one
    /// made from the node's run and request), so a redelivery is answered from the
    /// journaled answer instead of being applied again.
    Command {
        node: String,
        command: Command,
        /// Not applied after this: the API node has answered ORDER_STATUS_UNKNOWN.
        deadline: UnixNanos,
    },
    /// The read model as it is now, for an API node starting or resynchronizing.
    Snapshot { node: String, request: u64 },
}

/// Why a forwarded command was not applied (mirrors the single node's refusals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Refusal {
    /// The engine's command queue was full.
    Busy,
    /// The engine's journal cannot write.
    JournalDown,
    /// The key was used before with another body.
    KeyReused,
    /// It arrived after its deadline.
    Expired,
    /// The engine could not answer (its own wait timed out).
    Unknown,
}

/// The engine to every API node, in order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum FromEngine {
    /// Journaled order output (steps and their events), in journal order.
    Output(Vec<OrderOutput>),
    /// The answer to one forwarded command: published after the output it caused.
    Answer {
        node: String,
        request: u64,
        answer: Result<Vec<OrderEvent>, Refusal>,
    },
    /// A read-model snapshot for `node`, stored under `key`; it holds every event up
    /// to `last_seq`.
    Snapshot {
        node: String,
        request: u64,
        key: String,
        last_seq: u64,
        owner: Owner,
    },
    /// Every second, and first thing after start-up: the last event sequence
    /// published (a node behind it missed output), and what the engine owns.
    Heartbeat { run: u64, last_seq: u64, owner: Owner },
}

pub fn encode<T: serde::Serialize>(m: &T) -> Vec<u8> {
    // Encoding plain data into a Vec cannot fail.
    postcard::to_allocvec(m).unwrap_or_default()
}

pub fn decode<'a, T: serde::Deserialize<'a>>(b: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(b)
}

/// `XADD stream MAXLEN ~ max_len * v1 <msg>`: one message, the stream trimmed
/// approximately (whole nodes: cheap) to about `max_len` entries.
pub fn xadd<T: serde::Serialize>(stream: &str, max_len: u64, msg: &T) -> redis::Cmd {
    redis::cmd("XADD")
        .arg(stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(max_len)
        .arg("*")
        .arg(FIELD)
        .arg(encode(msg))
        .to_owned()
}

/// One stream entry: its id and its [`FIELD`] (absent: another format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub data: Option<Vec<u8>>,
}

/// The entries of an `XREAD`/`XREADGROUP` reply for one stream (empty on a timeout).
/// Accepts RESP2 arrays and RESP3 maps; anything else is an error naming it.
pub fn entries(v: redis::Value) -> Result<Vec<Entry>, String> {
    use redis::Value;
    let streams: Vec<Value> = match v {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(a) => a,
        Value::Map(m) => m.into_iter().map(|(k, v)| Value::Array(vec![k, v])).collect(),
        other => return Err(format!("unexpected stream reply {other:?}")),
    };
    let mut out = Vec::new();
    for s in streams {
        let Value::Array(mut pair) = s else {
            return Err("a stream in the reply is not [name, entries]".into());
        };
        let Some(list) = pair.pop() else { continue };
        let list = match list {
            Value::Array(l) => l,
            Value::Nil => continue,
            other => return Err(format!("unexpected entry list {other:?}")),
        };
        out.extend(list.into_iter().map(entry).collect::<Result<Vec<_>, _>>()?);
    }
    Ok(out)
}

fn text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `[id, [field, value, ...]]`; a deleted entry's fields are nil.
fn entry(v: redis::Value) -> Result<Entry, String> {
    let redis::Value::Array(parts) = v else {
        return Err("a stream entry is not [id, fields]".into());
    };
    let mut parts = parts.into_iter();
    let id = parts
        .next()
        .as_ref()
        .and_then(text)
        .ok_or("a stream entry without an id")?;
    let fields = match parts.next() {
        Some(redis::Value::Array(f)) => f,
        Some(redis::Value::Map(m)) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    };
    let mut data = None;
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if text(&k).as_deref() == Some(FIELD) {
            if let redis::Value::BulkString(b) = v {
                data = Some(b);
            }
        }
    }
    Ok(Entry { id, data })
}

/// The millisecond part of a stream id (`<ms>-<seq>`): when Redis added the entry.
pub fn id_ms(id: &str) -> Option<u64> {
    id.split_once('-').map_or(Some(id), |(ms, _)| Some(ms))?.parse().ok()
}

/// Output as the journal's ring has it: steps with `events[i]` events each, events
/// numbered from 1 (tests of the links).
#[cfg(test)]
pub(crate) fn test_output(events: &[u8]) -> Vec<OrderOutput> {
    use stocksblitz_engine::orders::context::StepContext;
    use stocksblitz_engine::orders::step::{Input, Step};
    use stocksblitz_engine::orders::{AccountId, OrderEventData};
    let mut seq = 0;
    let mut out = Vec::new();
    for &n in events {
        out.push(OrderOutput::Step(Step {
            input: Input::Timer { at: UnixNanos(1) },
            market: None,
            events: u32::from(n),
            ctx: StepContext::default(),
        }));
        for i in 0..n {
            seq += 1;
            out.push(OrderOutput::Event(OrderEvent {
                seq,
                request: 0,
                account: AccountId(0),
                at: UnixNanos(1),
                last: i + 1 == n,
                data: OrderEventData::Done { count: 0 },
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn stream_replies_read_in_both_protocols_and_refuse_other_shapes() {
        let e = |id: &str, v: &[u8]| {
            Value::Array(vec![
                bulk(id.as_bytes()),
                Value::Array(vec![bulk(FIELD.as_bytes()), bulk(v)]),
            ])
        };
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk(b"s"),
            Value::Array(vec![e("1-0", b"a"), e("2-5", b"b")]),
        ])]);
        let want = vec![
            Entry {
                id: "1-0".into(),
                data: Some(b"a".to_vec()),
            },
            Entry {
                id: "2-5".into(),
                data: Some(b"b".to_vec()),
            },
        ];
        assert_eq!(entries(resp2), Ok(want.clone()));
        let resp3 = Value::Map(vec![(bulk(b"s"), Value::Array(vec![e("1-0", b"a"), e("2-5", b"b")]))]);
        assert_eq!(entries(resp3), Ok(want));
        assert_eq!(entries(Value::Nil), Ok(vec![]));
        // Another format version's field (the previous one): the entry is there, its data is not.
        let other = Value::Array(vec![Value::Array(vec![
            bulk(b"s"),
            Value::Array(vec![Value::Array(vec![
                bulk(b"3-0"),
                Value::Array(vec![bulk(b"v1"), bulk(b"x")]),
            ])]),
        ])]);
        assert_eq!(
            entries(other),
            Ok(vec![Entry {
                id: "3-0".into(),
                data: None
            }])
        );
        // A deleted entry in a pending list: nil fields.
        let deleted = Value::Array(vec![Value::Array(vec![
            bulk(b"s"),
            Value::Array(vec![Value::Array(vec![bulk(b"4-0"), Value::Nil])]),
        ])]);
        assert_eq!(
            entries(deleted),
            Ok(vec![Entry {
                id: "4-0".into(),
                data: None
            }])
        );
        assert!(entries(Value::Int(3)).is_err());
        assert!(entries(Value::Array(vec![Value::Int(3)])).is_err());
        assert_eq!(id_ms("1712-3"), Some(1712));
        assert_eq!(id_ms("x-3"), None);
    }

    #[test]
    fn messages_round_trip_and_damage_is_an_error() {
        let m = FromEngine::Answer {
            node: "api-1".into(),
            request: 7,
            answer: Err(Refusal::Busy),
        };
        let b = encode(&m);
        assert_eq!(decode::<FromEngine>(&b).ok(), Some(m));
        for cut in 0..b.len() {
            assert!(decode::<FromEngine>(&b[..cut]).is_err(), "truncated at {cut}");
        }
    }
}
