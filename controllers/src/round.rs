//! The wait between two rounds of a controller loop (scheduler, lifecycle, task groups):
//! each loop decides from its cache, acts, then sleeps until the soonest of shutdown, its
//! own deadline, or a change to the cache followed by a short settling time that gathers
//! the burst of events a round of writes causes into one round.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Waits for the next round: `wait` at the most, or until `changes` moves and then
/// `settle` passes. False when `shutdown` was cancelled, and the loop should end.
pub(crate) async fn next_round(
    changes: &mut watch::Receiver<u64>,
    wait: Duration,
    settle: Duration,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
        _ = async {
            let _ = changes.changed().await;
            tokio::time::sleep(settle).await;
        } => true,
    }
}
