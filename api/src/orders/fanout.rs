//! The order fan-out thread: drains the journal's output ring (durable steps and
//! their events; never drops) into the read model, completes waiting requests, and
//! hands every event to the WebSocket hub's private channels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use stocksblitz_engine::idle::{IdleConfig, Idler};
use stocksblitz_engine::orders::gateway::OrderOutput;
use stocksblitz_engine::orders::{OrderEvent, OrderEventData, StepAssembler};
use stocksblitz_engine::ring::RingConsumer;
use stocksblitz_engine::surveillance::Anomaly;

use super::service::OrderService;
use crate::audit::{Actor, AuditLog, Entry};
use crate::ws::hub::Hub;

const BATCH: usize = 4096;

/// The audit log's entry for an anomaly (and the action it took).
fn anomaly_entry(service: &OrderService, seq: u64, a: &Anomaly) -> Entry {
    Entry {
        action: "surveillance.anomaly",
        actor: Actor {
            kind: "system",
            name: Some("surveillance".into()),
        },
        request_id: format!("anomaly-{seq}"),
        outcome: a.action.as_str().to_owned(),
        status: 0,
        details: serde_json::json!({
            "rule": a.rule.as_str(),
            "severity": a.severity.as_str(),
            "account": a.account.map(|id| service.accounts.name(id).to_owned()),
            "instrument": a.instrument.map(|i| i.0),
            "observed": a.observed,
            "threshold": a.threshold,
            "scale": a.scale,
            "message": a.describe(None, a.account.map(|id| service.accounts.name(id))),
        }),
        at_ns: a.at.0,
    }
}

pub fn spawn_order_fanout(
    service: Arc<OrderService>,
    hub: Arc<Hub>,
    audit: Arc<AuditLog>,
    mut ring: RingConsumer<OrderOutput>,
    idle: IdleConfig,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("order-fanout".into()).spawn(move || {
        let mut idler = Idler::new(idle);
        let mut batch: Vec<OrderOutput> = Vec::with_capacity(BATCH);
        let mut events: Vec<OrderEvent> = Vec::with_capacity(BATCH);
        let mut steps = StepAssembler::with_capacity(BATCH);
        // Events of requests whose last event has not arrived yet.
        let mut partial: HashMap<u64, Vec<OrderEvent>> = HashMap::new();
        while !stop.load(Ordering::Relaxed) {
            ring.pop_batch(&mut batch, BATCH);
            if batch.is_empty() {
                idler.idle();
                continue;
            }
            idler.reset();
            {
                let mut store = service.store.write();
                for item in &batch {
                    if let Some((step, step_events)) = steps.push(item) {
                        store.apply_step(&step, step_events);
                    }
                }
            }
            events.extend(batch.iter().filter_map(|i| match i {
                OrderOutput::Event(e) => Some(*e),
                OrderOutput::Step(_) => None,
            }));
            for e in &events {
                if e.request != 0 {
                    partial.entry(e.request).or_default().push(*e);
                    if e.last {
                        if let Some(done) = partial.remove(&e.request) {
                            service.complete(e.request, done);
                        }
                    }
                }
            }
            for e in &events {
                if let OrderEventData::Anomaly(a) = e.data {
                    audit.record(anomaly_entry(&service, e.seq, &a));
                }
            }
            hub.dispatch_private(&events);
            events.clear();
            batch.clear();
        }
    })
}
