//! The API side of the order path: hands commands to the engine's bounded queue and
//! waits (bounded by `[orders] response_timeout_ms`) for the events of that request,
//! which the order fan-out thread routes back by request id.
//!
//! A full queue is refused at once (503 ENGINE_BUSY: nothing was placed). An answer
//! that does not arrive in time is reported as UNKNOWN, never as rejected: the command
//! may still execute, and the order will then appear in GET /api/v1/orders.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use stocksblitz_engine::journal::JournalStats;
use stocksblitz_engine::orders::gateway::CommandQueue;
use stocksblitz_engine::orders::{AccountId, Command, CommandKind, IdemTag, OrderEvent};
use stocksblitz_engine::UnixNanos;
use tokio::sync::oneshot;

use super::accounts::Accounts;
use super::idempotency::{Claim, Idempotency};
use crate::redis_store::{RedisDown, RedisStore};
use stocksblitz_engine::orders::store::OrderStore;

/// Why a command got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The command queue is full: nothing was sent.
    Busy,
    /// No answer in time: the outcome is unknown.
    Timeout { request: u64 },
    /// The order journal has failed: intake is stopped, nothing was sent.
    JournalDown,
}

pub struct OrderService {
    pub accounts: Accounts,
    pub store: RwLock<OrderStore>,
    pub idempotency: Idempotency,
    queue: CommandQueue,
    pending: Mutex<HashMap<u64, oneshot::Sender<Vec<OrderEvent>>>>,
    next_request: AtomicU64,
    timeout: Duration,
    journal: Arc<JournalStats>,
    /// Where `Idempotency-Key`s live when `[redis]` is configured (shared by API nodes).
    redis: Option<Arc<RedisStore>>,
}

impl OrderService {
    pub fn new(
        accounts: Accounts,
        store: OrderStore,
        queue: CommandQueue,
        timeout: Duration,
        journal: Arc<JournalStats>,
    ) -> Self {
        Self {
            accounts,
            store: RwLock::new(store),
            idempotency: Idempotency::default(),
            queue,
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            timeout,
            journal,
            redis: None,
        }
    }

    /// Keeps `Idempotency-Key`s in Redis instead of in process.
    pub fn with_redis(mut self, redis: Arc<RedisStore>) -> Self {
        self.redis = Some(redis);
        self
    }

    /// Claims an `Idempotency-Key` (Redis when configured, else in process). Redis
    /// being unreachable is an error, never a silent skip of the check.
    pub async fn claim_key(&self, account: AccountId, key: &str, body: &[u8]) -> Result<Claim, RedisDown> {
        match &self.redis {
            Some(r) => r.claim(self.accounts.name(account), key, body).await,
            None => Ok(self.idempotency.claim(account, key, body)),
        }
    }

    /// Records the answer to a claimed key (a non-final one releases it).
    pub async fn finish_key(
        &self,
        account: AccountId,
        key: &str,
        body: &[u8],
        status: axum::http::StatusCode,
        answer: &serde_json::Value,
        final_outcome: bool,
    ) {
        match &self.redis {
            Some(r) => {
                let done = r
                    .finish(self.accounts.name(account), key, body, status, answer, final_outcome)
                    .await;
                if let Err(e) = done {
                    // The key stays "in flight" until it expires; retries get 409 until then.
                    tracing::warn!(error = %e.0, "idempotency: could not record the answer in redis");
                }
            }
            None => self.idempotency.finish(account, key, status, answer, final_outcome),
        }
    }

    /// Sends a command and waits for all of its events.
    pub async fn submit(&self, account: AccountId, kind: CommandKind) -> Result<Vec<OrderEvent>, SubmitError> {
        self.submit_keyed(account, kind, None).await
    }

    /// [`submit`](Self::submit) for a request with an `Idempotency-Key` (journaled with
    /// it, so its answer survives a restart).
    pub async fn submit_keyed(
        &self,
        account: AccountId,
        kind: CommandKind,
        idempotency: Option<IdemTag>,
    ) -> Result<Vec<OrderEvent>, SubmitError> {
        if self.journal.is_failed() {
            return Err(SubmitError::JournalDown);
        }
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(request, tx);
        let cmd = Command {
            request,
            account,
            at: UnixNanos::now(),
            kind,
            idempotency,
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

    /// The order journal's counters and state.
    pub fn journal(&self) -> &Arc<JournalStats> {
        &self.journal
    }

    /// Commands waiting in the engine's queue.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Called by the fan-out thread with a request's complete events.
    pub fn complete(&self, request: u64, events: Vec<OrderEvent>) {
        if let Some(tx) = self.pending.lock().remove(&request) {
            let _ = tx.send(events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksblitz_engine::orders::gateway::command_queue;

    fn service(queue: CommandQueue, timeout_ms: u64) -> OrderService {
        OrderService::new(
            Accounts::new(&["alice".to_owned()]),
            OrderStore::new(1, 10),
            queue,
            Duration::from_millis(timeout_ms),
            Arc::new(JournalStats::default()),
        )
    }

    #[tokio::test]
    async fn no_answer_is_unknown_and_a_full_queue_is_busy() {
        // Nobody drains this queue: the engine "does not answer".
        let queue = command_queue(1);
        let svc = service(queue.clone(), 20);
        let r = svc.submit(AccountId(0), CommandKind::QueryRisk).await;
        assert!(
            matches!(r, Err(SubmitError::Timeout { .. })),
            "unknown, never a false rejection"
        );
        assert!(svc.pending.lock().is_empty(), "the waiter is cleaned up");
        // The queue still holds the first command: the next one does not fit.
        assert_eq!(
            svc.submit(AccountId(0), CommandKind::QueryRisk).await,
            Err(SubmitError::Busy)
        );
        // An answer routed by request id completes the waiter.
        let _ = queue.pop();
        let svc = Arc::new(service(queue.clone(), 5_000));
        let s2 = Arc::clone(&svc);
        let waiter = tokio::spawn(async move { s2.submit(AccountId(0), CommandKind::QueryRisk).await });
        let cmd = loop {
            if let Some(c) = queue.pop() {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        svc.complete(cmd.request, Vec::new());
        assert_eq!(waiter.await.unwrap(), Ok(Vec::new()));
        // A failed journal stops intake before anything is queued.
        svc.journal().fail("disk full".into());
        assert_eq!(
            svc.submit(AccountId(0), CommandKind::QueryRisk).await,
            Err(SubmitError::JournalDown)
        );
        assert!(queue.is_empty());
    }
}
