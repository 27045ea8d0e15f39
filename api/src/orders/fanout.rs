//! The order fan-out thread: drains the journal's output ring (durable steps and
//! their events; never drops) into the read model, completes waiting requests, and
//! hands every event to the WebSocket hub's private channels (and, with `[cluster]`,
//! every item to the engine link for API nodes).

use std::collections::HashMap;
use std::sync::Arc;

use stocksblitz_engine::agent::{spawn_agent, Agent, AgentError, AgentSpec, ThreadHandle};
use stocksblitz_engine::orders::gateway::OrderOutput;
use stocksblitz_engine::orders::{OrderEvent, OrderEventData, StepAssembler};
use stocksblitz_engine::ring::{RingConsumer, RingProducer};
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

/// The order fan-out as an agent: a poll takes one batch off the journal's ring.
struct OrderFanout {
    service: Arc<OrderService>,
    hub: Arc<Hub>,
    audit: Arc<AuditLog>,
    ring: RingConsumer<OrderOutput>,
    /// With `[cluster]`: the engine link's ring (the output stream for API nodes),
    /// handed each batch before its requests complete.
    cluster: Option<RingProducer<OrderOutput>>,
    batch: Vec<OrderOutput>,
    events: Vec<OrderEvent>,
    steps: StepAssembler,
    /// Events of requests whose last event has not arrived yet.
    partial: HashMap<u64, Vec<OrderEvent>>,
}

impl Agent for OrderFanout {
    fn name(&self) -> &str {
        "order-fanout"
    }

    fn poll(&mut self) -> usize {
        self.ring.pop_batch(&mut self.batch, BATCH);
        let n = self.batch.len();
        if n == 0 {
            return 0;
        }
        {
            let mut store = self.service.store().write();
            for item in &self.batch {
                if let Some((step, step_events)) = self.steps.push(item) {
                    store.apply_step(&step, step_events);
                }
            }
        }
        if let Some(link) = &mut self.cluster {
            // A full ring drops (counted on the ring): API nodes see the gap and resync.
            for item in &self.batch {
                link.push(*item);
            }
        }
        self.events.extend(self.batch.iter().filter_map(|i| match i {
            OrderOutput::Event(e) => Some(*e),
            OrderOutput::Step(_) => None,
        }));
        for e in &self.events {
            if e.request != 0 {
                self.partial.entry(e.request).or_default().push(*e);
                if e.last {
                    if let Some(done) = self.partial.remove(&e.request) {
                        self.service.complete(e.request, done);
                    }
                }
            }
        }
        for e in &self.events {
            if let OrderEventData::Anomaly(a) = e.data {
                self.audit.record(anomaly_entry(&self.service, e.seq, &a));
            }
        }
        self.hub.dispatch_private(&self.events);
        self.events.clear();
        self.batch.clear();
        n
    }
}

/// Starts the order fan-out on its thread (`spec`: its name, idle strategy, stop flag
/// and the doorbell the journal rings).
pub fn spawn_order_fanout(
    service: Arc<OrderService>,
    hub: Arc<Hub>,
    audit: Arc<AuditLog>,
    ring: RingConsumer<OrderOutput>,
    cluster: Option<RingProducer<OrderOutput>>,
    spec: AgentSpec,
) -> Result<ThreadHandle, AgentError> {
    let agent = OrderFanout {
        service,
        hub,
        audit,
        ring,
        cluster,
        batch: Vec::with_capacity(BATCH),
        events: Vec::with_capacity(BATCH),
        steps: StepAssembler::with_capacity(BATCH),
        partial: HashMap::new(),
    };
    spawn_agent(agent, spec)
}
