//! A named thread running one future on a current-thread tokio runtime of its own:
//! how the Redis loops (publisher, subscriber, the cluster links) run, so none of them
//! shares the API's runtime with request handling, and each is joined like any other
//! thread at shutdown (its future watches `stop`).

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use stocksblitz_engine::agent::{spawn_thread, AgentError, ThreadHandle};

/// Starts thread `name` running `body()` to completion; `stop` is the flag its
/// future watches (recorded on the handle).
pub fn spawn_async<F, Fut>(name: &str, stop: &Arc<AtomicBool>, body: F) -> Result<ThreadHandle, AgentError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let label = name.to_owned();
    spawn_thread(name, None, move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(body()),
            Err(e) => tracing::error!(error = %e, thread = %label, "no async runtime for the thread"),
        }
    })
    .map(|h| h.with_stop(stop))
}
