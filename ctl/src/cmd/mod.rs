//! One module per command. Each has an `Args` struct (clap) and an async `run` returning the
//! process exit code; errors carry context and are printed once by `main`.

pub mod agent;
pub mod apply;
pub mod backup;
pub mod controllers;
pub mod daemon;
pub mod delete;
pub mod describe;
pub mod describe_group;
pub mod diff;
pub mod events;
pub mod get;
pub mod kubeconfig;
pub mod login;
pub mod node;
pub mod server;
pub mod task;
pub mod task_batch;
pub mod task_group;
pub mod token;
pub mod top;
pub mod up;
pub mod wait;
pub mod whoami;

/// True when `e` says the server could not be reached or refused the credential (401): one
/// such error fails every object the same way, so commands stop at the first and `main`
/// prints it once, with what to do.
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.downcast_ref::<kohakuriver_client::Error>()
        .is_some_and(|e| e.is_connect() || is_unauthenticated(e))
}

/// True for a 401: no credential, or one the server does not accept (unknown, expired,
/// revoked).
pub fn is_unauthenticated(e: &kohakuriver_client::Error) -> bool {
    match e {
        kohakuriver_client::Error::Api(status) => status.code == 401,
        kohakuriver_client::Error::Unexpected { code, .. } => *code == 401,
        _ => false,
    }
}
