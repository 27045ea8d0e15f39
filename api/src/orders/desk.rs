//! The part of the shared state order entry needs: the order service (absent when
//! `[orders]` is off) and the market's instruments. Handlers and WebSocket sessions that
//! place, read or cancel orders take this, not the whole application state.

use std::sync::Arc;

use crate::market::Market;

use super::OrderService;

/// Cheap to clone: two `Arc`s.
#[derive(Clone)]
pub struct Desk {
    pub market: Arc<Market>,
    /// Order entry, when `[orders]` is configured.
    pub orders: Option<Arc<OrderService>>,
}
