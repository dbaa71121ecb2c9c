//! One module per command. Each has an `Args` struct (clap) and an async `run` returning the
//! process exit code; errors carry context and are printed once by `main`.

pub mod agent;
pub mod apply;
pub mod controllers;
pub mod daemon;
pub mod delete;
pub mod describe;
pub mod diff;
pub mod get;
pub mod node;
pub mod server;
pub mod task;
pub mod up;
pub mod wait;

/// True when `e` says the server could not be reached: one such error fails every object the
/// same way, so commands stop at the first and `main` prints it once.
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<kohakuriver_client::Error>()
        .is_some_and(kohakuriver_client::Error::is_connect)
}
