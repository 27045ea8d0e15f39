//! The API side of the order path: hands commands to the engine's bounded queue (or,
//! on an API node, to the engine's command stream: [`crate::cluster`]) and waits
//! (bounded by `[orders] response_timeout_ms`) for the events of that request, which
//! the order fan-out thread (or the API node's stream reader) routes back by request id.
//!
//! A full queue is refused at once (503 ENGINE_BUSY: nothing was placed). An answer
//! that does not arrive in time is reported as UNKNOWN, never as rejected: the command
//! may still execute, and the order will then appear in GET /api/v1/orders.
//!
//! With more than one engine ([`route`](super::route)), a command goes to the engine
//! that owns its instrument (or, by id, its order); account-wide commands (mass cancel
//! of everything, kill switch, limits, trading state, risk usage) go to every engine
//! and their answers are merged. The read model is one replica per engine.

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
pub use super::forward::{Answer, BoxFuture, Forward, SubmitError};
use super::idempotency::{Claim, Idempotency};
use super::route::{self, Target};
use crate::redis_store::{RedisDown, RedisStore};
use stocksblitz_engine::orders::store::{Keyed, OrderRecord, OrderStore};
use stocksblitz_engine::orders::OrderId;

/// Where commands go.
enum Route {
    /// The engine in this process.
    Local(CommandQueue),
    /// The engine nodes, through their command streams (the replica of engine `k`
    /// is `stores[k]`).
    Remote(Vec<Arc<dyn Forward>>),
}

pub struct OrderService {
    pub accounts: Accounts,
    /// The read model: one per engine (one on a single node).
    stores: Vec<RwLock<OrderStore>>,
    pub idempotency: Idempotency,
    route: Route,
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
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
            stores: vec![RwLock::new(store)],
            idempotency: Idempotency::default(),
            route: Route::Local(queue),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            timeout,
            journal,
            redis: None,
        }
    }

    /// Sends commands to engine nodes through Redis instead of a local queue, with a
    /// replica of the read model for each (all empty until their snapshots arrive).
    pub fn with_remote(mut self, engines: Vec<Arc<dyn Forward>>) -> Self {
        let empty = self.stores[0].read().clone();
        self.stores = engines.iter().map(|_| RwLock::new(empty.clone())).collect();
        self.route = Route::Remote(engines);
        self
    }

    /// The engine nodes this API node forwards to (empty on a single node).
    pub fn remotes(&self) -> &[Arc<dyn Forward>] {
        match &self.route {
            Route::Remote(r) => r,
            Route::Local(_) => &[],
        }
    }

    /// The read model (a single node's, or an API node's replica of its first engine).
    pub fn store(&self) -> &RwLock<OrderStore> {
        &self.stores[0]
    }

    /// Every replica of the read model, one per engine in configuration order.
    pub fn stores(&self) -> &[RwLock<OrderStore>] {
        &self.stores
    }

    /// The account's order `id`, from whichever engine's read model has it.
    pub fn order(&self, account: AccountId, id: OrderId) -> Option<OrderRecord> {
        self.stores.iter().find_map(|s| s.read().order(account, id).copied())
    }

    /// A keyed request's answer kept in the read model (from any engine).
    pub fn keyed(&self, account: AccountId, key: &[u8; 16], now: UnixNanos) -> Option<Keyed> {
        self.stores
            .iter()
            .find_map(|s| s.read().keyed(account, key, now).cloned())
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
            // In flight at most as long as an answer is awaited, plus Redis's round trips.
            Some(r) => {
                let in_flight = self.timeout * 2 + std::time::Duration::from_secs(1);
                r.claim(self.accounts.name(account), key, body, in_flight).await
            }
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
        let engines = match &self.route {
            Route::Local(_) => return self.submit_to(None, account, kind, idempotency).await,
            Route::Remote(engines) => engines,
        };
        match route::target(engines, &kind)? {
            Target::One(k) => self.submit_to(engines.get(k), account, kind, idempotency).await,
            Target::All => {
                // Refused up front when any engine cannot take it: nothing is sent.
                for e in engines {
                    e.ready()?;
                }
                let legs = engines
                    .iter()
                    .map(|e| self.submit_to(Some(e), account, kind, idempotency));
                route::merge(&kind, futures_util::future::join_all(legs).await)
            }
        }
    }

    /// One command to the local engine (`None`) or to one engine node.
    async fn submit_to(
        &self,
        remote: Option<&Arc<dyn Forward>>,
        account: AccountId,
        kind: CommandKind,
        idempotency: Option<IdemTag>,
    ) -> Result<Vec<OrderEvent>, SubmitError> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let cmd = Command {
            request,
            account,
            at: UnixNanos::now(),
            kind,
            idempotency,
        };
        match (&self.route, remote) {
            (Route::Local(queue), _) => {
                self.pending.lock().insert(request, tx);
                if queue.push(cmd).is_err() {
                    self.pending.lock().remove(&request);
                    return Err(SubmitError::Busy);
                }
            }
            (Route::Remote(_), None) => return Err(SubmitError::NotRouted),
            (Route::Remote(_), Some(remote)) => {
                remote.ready()?;
                self.pending.lock().insert(request, tx);
                let deadline = UnixNanos(cmd.at.0.saturating_add(self.timeout.as_nanos() as i64));
                if let Err(e) = remote.send(remote.tagged(cmd), deadline).await {
                    self.pending.lock().remove(&request);
                    return Err(e.unwrap_or(SubmitError::Timeout { request }));
                }
            }
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(answer)) => answer,
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

    /// Commands waiting in the engine's queue (on an API node: requests awaiting an answer).
    pub fn queue_depth(&self) -> usize {
        match &self.route {
            Route::Local(queue) => queue.len(),
            Route::Remote(_) => self.pending.lock().len(),
        }
    }

    /// Called by the fan-out thread with a request's complete events.
    pub fn complete(&self, request: u64, events: Vec<OrderEvent>) {
        self.answer(request, Ok(events));
    }

    /// Hands a request its answer (an API node's stream reader: events or a refusal).
    pub fn answer(&self, request: u64, answer: Answer) {
        if let Some(tx) = self.pending.lock().remove(&request) {
            let _ = tx.send(answer);
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
