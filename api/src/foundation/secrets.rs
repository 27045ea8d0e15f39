//! Secrets (keys, passwords, tokens) come only from the environment or a `*_FILE`
//! beside it, never from config files. The reader is shared with the feed handlers (the
//! Kite token); this is the one name the API crate uses for it.

pub use stocksblitz_feed_handlers::secrets::*;
