//! Zerodha Kite Connect ticker protocol: binary tick frames and JSON text frames.
//! Kite has no sequence numbers, so staleness is detected by timer in the handler.

pub mod decode;
pub mod normalizer;
pub mod text;

pub use decode::{FrameSummary, KiteDecoder, KiteError};
pub use text::{parse_text, KiteText, KiteTextError};
