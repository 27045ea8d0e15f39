//! The API side of the order path: hands commands to the engine's bounded queue and
//! waits (bounded by `[orders] response_timeout_ms`) for the events of that request,
//! which the order fan-out thread routes back by request id.
//!
//! A full queue is refused at once (503 ENGINE_BUSY: nothing was placed). An answer
//! that does not arrive in time is reported as UNKNOWN, never as rejected: the command
//! may still execute, and the order will then appear in GET /api/v1/orders.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use stocksblitz_engine::orders::gateway::CommandQueue;
use stocksblitz_engine::orders::{AccountId, Command, CommandKind, OrderEvent};
use stocksblitz_engine::UnixNanos;
use tokio::sync::oneshot;

use super::accounts::Accounts;
use super::idempotency::Idempotency;
use super::store::OrderStore;
use crate::auth::Tokens;

/// Why a command got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The command queue is full: nothing was sent.
    Busy,
    /// No answer in time: the outcome is unknown.
    Timeout { request: u64 },
}

pub struct OrderService {
    pub tokens: Tokens,
    pub accounts: Accounts,
    pub store: RwLock<OrderStore>,
    pub idempotency: Idempotency,
    queue: CommandQueue,
    pending: Mutex<HashMap<u64, oneshot::Sender<Vec<OrderEvent>>>>,
    next_request: AtomicU64,
    timeout: Duration,
}

impl OrderService {
    pub fn new(tokens: Tokens, accounts: Accounts, store: OrderStore, queue: CommandQueue, timeout: Duration) -> Self {
        Self {
            tokens,
            accounts,
            store: RwLock::new(store),
            idempotency: Idempotency::default(),
            queue,
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            timeout,
        }
    }

    /// Sends a command and waits for all of its events.
    pub async fn submit(&self, account: AccountId, kind: CommandKind) -> Result<Vec<OrderEvent>, SubmitError> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(request, tx);
        let cmd = Command {
            request,
            account,
            at: UnixNanos::now(),
            kind,
        };
        if self.queue.push(cmd).is_err() {
            self.pending.lock().remove(&request);
            return Err(SubmitError::Busy);
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(events)) => Ok(events),
            _ => {
                self.pending.lock().remove(&request);
                Err(SubmitError::Timeout { request })
            }
        }
    }

    /// A number for client order ids the API generates (`auto-<n>`).
    pub fn next_auto_id(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    /// Called by the fan-out thread with a request's complete events.
    pub fn complete(&self, request: u64, events: Vec<OrderEvent>) {
        if let Some(tx) = self.pending.lock().remove(&request) {
            let _ = tx.send(events);
        }
    }
}
