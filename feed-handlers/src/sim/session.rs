//! The one session loop every simulated venue runs per client connection.
//!
//! The loop owns what all venues share: the scripted connection lifecycle (announced
//! shutdown, close, abrupt abort), silence, the broadcast of rendered market data,
//! reading the client, a periodic keepalive and ending the session when a send fails.
//! What differs (which messages a client gets, how faults act on them, what a
//! keepalive and a shutdown notice look like, what the client may say) is the venue's
//! [`SimClient`], in the venue's own folder.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use super::delivery::Batch;
use super::faults::{Faults, Lifecycle, SessionFaults};
use super::{Outgoing, VenueSim};

/// One step of what a session sends, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Send {
    Text(String),
    Binary(Vec<u8>),
    /// A WebSocket ping (the client's library answers it).
    Ping,
    /// Wait before the next step (a slow-frame fault).
    Pause(Duration),
}

/// A venue's side of one simulated client connection.
pub trait SimClient: std::marker::Send {
    /// What the venue sends when it announces a shutdown; `None`: it gives no notice
    /// and the socket just closes when due.
    fn shutdown_notice(&self) -> Option<String> {
        None
    }

    /// How often [`SimClient::keepalive`] runs (the first one at once).
    fn keepalive_every(&self) -> Duration;

    /// The venue's periodic keepalive (a ping, heartbeats).
    fn keepalive(&mut self, out: &mut Vec<Send>);

    /// One rendered message of a market step: what this client gets of it, with
    /// pending faults applied.
    fn message(&mut self, msg: &Outgoing, faults: &Faults, out: &mut Vec<Send>);

    /// After every message of a step (venues that send a step as one frame).
    fn end_of_step(&mut self, _faults: &Faults, _out: &mut Vec<Send>) {}

    /// A text message from the client (subscriptions); other messages are ignored.
    fn incoming(&mut self, _text: &str, _sim: &VenueSim, _out: &mut Vec<Send>) {}
}

/// Sends `steps` in order (draining them); false when the client is gone.
async fn send(socket: &mut WebSocket, steps: &mut Vec<Send>) -> bool {
    for step in steps.drain(..) {
        let sent = match step {
            Send::Text(t) => socket.send(Message::Text(Utf8Bytes::from(t))).await,
            Send::Binary(b) => socket.send(Message::Binary(b.into())).await,
            Send::Ping => socket.send(Message::Ping(Default::default())).await,
            Send::Pause(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        };
        if sent.is_err() {
            return false;
        }
    }
    true
}

/// Serves one client until it leaves, a send fails or a fault ends the connection.
/// `rx` was subscribed by the caller (before any handshake snapshot it sent).
pub async fn serve(
    mut socket: WebSocket,
    sim: Arc<VenueSim>,
    mut rx: Receiver<Arc<Batch>>,
    mut client: impl SimClient,
) {
    let f = &sim.faults;
    let mut lifecycle = SessionFaults::new(f);
    let mut keepalive = tokio::time::interval(client.keepalive_every());
    let mut out = Vec::new();
    // After `rx` was subscribed (by the caller), so every batch it gets is tracked.
    let tracked = sim.delivery.track();
    // Under a `lag` fault: what the session rendered, when it is due, and the batch it
    // completes (none for a keepalive).
    let mut late: VecDeque<(tokio::time::Instant, Vec<Send>, Option<u64>)> = VecDeque::new();
    loop {
        match lifecycle.check(f) {
            Lifecycle::Serve => {}
            Lifecycle::Announce => {
                if let Some(notice) = client.shutdown_notice() {
                    out.push(Send::Text(notice));
                    if !send(&mut socket, &mut out).await {
                        return;
                    }
                }
            }
            Lifecycle::Close => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            // Abrupt: no close frame.
            Lifecycle::Abort => return,
        }
        tokio::select! {
            batch = rx.recv() => {
                let batch = match batch {
                    Ok(b) => b,
                    // A client too slow for the venue is disconnected, as venues do.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                };
                if f.silenced() {
                    tracked.delivered(batch.seq);
                    continue;
                }
                let latency = lifecycle.latency(f);
                if latency > Duration::ZERO || !late.is_empty() {
                    let mut steps = Vec::new();
                    for msg in batch.msgs.iter() {
                        client.message(msg, f, &mut steps);
                    }
                    client.end_of_step(f, &mut steps);
                    late.push_back((tokio::time::Instant::now() + latency, steps, Some(batch.seq)));
                    continue;
                }
                for msg in batch.msgs.iter() {
                    client.message(msg, f, &mut out);
                    if !send(&mut socket, &mut out).await {
                        return;
                    }
                }
                client.end_of_step(f, &mut out);
                if !send(&mut socket, &mut out).await {
                    return;
                }
                tracked.delivered(batch.seq);
            }
            _ = async {
                match late.front() {
                    Some((due, _, _)) => tokio::time::sleep_until(*due).await,
                    None => std::future::pending().await,
                }
            }, if !late.is_empty() => {
                if let Some((_, mut steps, seq)) = late.pop_front() {
                    if !send(&mut socket, &mut steps).await {
                        return;
                    }
                    if let Some(seq) = seq {
                        tracked.delivered(seq);
                    }
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Text(t))) => {
                    client.incoming(t.as_str(), &sim, &mut out);
                    if !send(&mut socket, &mut out).await {
                        return;
                    }
                }
                Some(Ok(_)) => {}
            },
            _ = keepalive.tick() => {
                client.keepalive(&mut out);
                // A lagging connection is late with everything: its heartbeats must
                // not announce trades still on their way.
                let latency = lifecycle.latency(f);
                if latency > Duration::ZERO || !late.is_empty() {
                    late.push_back((tokio::time::Instant::now() + latency, std::mem::take(&mut out), None));
                    continue;
                }
                if !send(&mut socket, &mut out).await {
                    return;
                }
            }
        }
    }
}

/// Driving a venue's [`SimClient`] without a socket, for the venues' tests.
#[cfg(test)]
pub(crate) mod testing {
    use proptest::prelude::*;

    use super::{Send, SimClient};
    use crate::sim::faults::Faults;
    use crate::sim::{MsgKind, Outgoing, Payload};

    /// What `client` sends for each market step in `steps`, with `faults` pending.
    pub fn run(client: &mut impl SimClient, steps: &[Vec<Outgoing>], faults: &Faults) -> Vec<Vec<Send>> {
        steps
            .iter()
            .map(|step| {
                let mut out = Vec::new();
                for msg in step {
                    client.message(msg, faults, &mut out);
                }
                client.end_of_step(faults, &mut out);
                out
            })
            .collect()
    }

    pub fn kind() -> impl Strategy<Value = MsgKind> {
        prop_oneof![Just(MsgKind::Book), Just(MsgKind::Trade), Just(MsgKind::Other)]
    }

    /// Steps of text messages keyed `k0`..`k3` (unique texts, so each can be traced).
    pub fn text_steps() -> impl Strategy<Value = Vec<Vec<Outgoing>>> {
        proptest::collection::vec(proptest::collection::vec((0u8..4, kind()), 0..6), 0..8).prop_map(|steps| {
            let mut n = 0;
            steps
                .into_iter()
                .map(|step| {
                    step.into_iter()
                        .map(|(key, kind)| {
                            n += 1;
                            Outgoing {
                                key: format!("k{key}"),
                                payload: Payload::Text(format!("m{n}")),
                                kind,
                            }
                        })
                        .collect()
                })
                .collect()
        })
    }

    /// The texts of `steps` whose key is in `keys`, in order.
    pub fn texts_for(steps: &[Vec<Outgoing>], keys: &[&str], kind: Option<MsgKind>) -> Vec<String> {
        steps
            .iter()
            .flatten()
            .filter(|m| keys.contains(&m.key.as_str()) && kind.is_none_or(|k| m.kind == k))
            .filter_map(|m| match &m.payload {
                Payload::Text(t) => Some(t.clone()),
                Payload::Binary(_) => None,
            })
            .collect()
    }

    /// Every text sent, in order.
    pub fn sent_texts(sent: &[Vec<Send>]) -> Vec<String> {
        sent.iter()
            .flatten()
            .filter_map(|s| match s {
                Send::Text(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }
}
