//! The crate's bottom layer: the error every route and session returns, request ids,
//! the request's original path, and reading secrets. Every other module may use it; it uses nothing else in the
//! crate (the tidy test `api_layers_have_no_cycles` checks both).

pub mod error;
pub mod path;
pub mod request_id;
pub mod secrets;

pub use error::ApiError;
pub use request_id::RequestId;
