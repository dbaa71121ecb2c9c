//! Typed HTTP client for the KohakuRiver API server.
//!
//! Every crate that talks to the server (the CLI, the controllers, the node agents) goes
//! through this crate, so the HTTP contract of `ARCHITECTURE.md` lives in one place.
//! [`Client`] is a cheap `Clone` handle around one connection pool; [`Api`] is the typed view
//! of one kind (`client.api::<Task>()`), with CRUD, apply, status updates with conflict
//! retry, a raw [`Api::watch`] and the resuming [`Api::watcher`].

mod api;
mod auth;
mod backoff;
mod client;
mod error;
pub mod events;
mod ndjson;
mod params;
pub mod watcher;

pub use api::{Api, Deleted};
pub use backoff::Backoff;
pub use client::{
    Client, ClientOptions, DEFAULT_REQUEST_TIMEOUT, fetch_pinned_ca, plaintext_token_risk,
};
pub use error::Error;
pub use events::{ObjectRef, Recorder, RecorderOptions};
pub use ndjson::MAX_LINE_BYTES;
pub use params::{ApplyOptions, ListParams, LogParams, LogStream};

/// Re-exported so users of the client need not depend on `futures` to name watch streams.
pub use futures::stream::BoxStream;
