//! The order fan-out thread: drains the engine's order event ring (which never drops)
//! into the read model, completes waiting requests, and hands every event to the
//! WebSocket hub's private channels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use stocksblitz_engine::idle::{IdleConfig, Idler};
use stocksblitz_engine::orders::OrderEvent;
use stocksblitz_engine::ring::RingConsumer;

use super::service::OrderService;
use crate::ws::hub::Hub;

const BATCH: usize = 4096;

pub fn spawn_order_fanout(
    service: Arc<OrderService>,
    hub: Arc<Hub>,
    mut ring: RingConsumer<OrderEvent>,
    idle: IdleConfig,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("order-fanout".into()).spawn(move || {
        let mut idler = Idler::new(idle);
        let mut batch: Vec<OrderEvent> = Vec::with_capacity(BATCH);
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
                for e in &batch {
                    store.apply(e);
                }
            }
            for e in &batch {
                if e.request != 0 {
                    partial.entry(e.request).or_default().push(*e);
                    if e.last {
                        if let Some(events) = partial.remove(&e.request) {
                            service.complete(e.request, events);
                        }
                    }
                }
            }
            hub.dispatch_private(&batch);
            batch.clear();
        }
    })
}
