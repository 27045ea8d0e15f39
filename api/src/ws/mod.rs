//! WebSocket streaming at `/api/v1/stream`: protocol, subscriptions and fan-out.

pub mod channel;
pub mod hub;
pub mod lag;
pub mod outbox;
pub mod pacing;
pub mod protocol;
pub mod reader;
pub mod session;
pub mod socket;
pub mod upgrade;

#[cfg(test)]
mod tests;
