//! One write as the writer runs it: read the current object, ask the admission decision
//! what to do, check a put against the other stored objects, and stage the change, all
//! inside the writer's batch; the request is answered after the batch commits.

use kohakuriver_api::Selectable;
use tokio::sync::oneshot;

use super::writer::{Batch, Committed, Job};
use super::{Change, Written};
use crate::admission::{Served, Stored, finalized};
use crate::error::AppError;

/// What a write answers: the object as stored (or as it would be), what happened,
/// `decide`'s extra value, and whether the history is over its bounds.
pub(super) type Answer<R, T> = Result<(R, Written, T, bool), AppError>;

/// A queued write of one object of kind `R`.
pub(super) struct Pending<R, T, F> {
    pub(super) name: String,
    pub(super) dry_run: bool,
    pub(super) decide: Option<F>,
    /// What `run` made of it, answered once the batch commits.
    pub(super) done: Option<(R, Written, T)>,
    pub(super) reply: oneshot::Sender<Answer<R, T>>,
}

impl<R, T, F> Job for Pending<R, T, F>
where
    R: Served,
    T: Send + 'static,
    F: FnOnce(Option<R>, &dyn Stored) -> Result<(Change<R>, T), AppError> + Send + 'static,
{
    fn run(&mut self, batch: &mut Batch<'_>) -> Result<(), AppError> {
        let decide = self
            .decide
            .take()
            .ok_or_else(|| AppError::internal("database write failed: the write ran twice"))?;
        let view = batch.view();
        let current = view.load::<R>(&self.name)?;
        let existed = current.is_some();
        let previous = current.clone();
        let (change, extra) = decide(current, &view)?;
        let change = match change {
            Change::Put(object) if finalized(&object) => Change::Remove(object),
            other => other,
        };
        // Rules spanning objects (no double-booking) run here, in the same transaction as
        // the write and after the batch's earlier writes, so nothing can slip in between
        // the check and the write.
        if let Change::Put(object) = &change {
            object.admit_against(previous.as_ref(), &view)?;
        }
        let (mut object, written) = match change {
            Change::Unchanged(object) => (object, Written::Unchanged),
            Change::Put(object) if existed => (object, Written::Updated),
            Change::Put(object) => (object, Written::Created),
            Change::Remove(object) => (object, Written::Removed),
        };
        if self.dry_run || written == Written::Unchanged {
            self.done = Some((object, written, extra));
            return Ok(());
        }
        // The state before every change is kept: filtered watches learn from it that an
        // object left or entered their selection, and later pages of a paged list read the
        // object as of their revision from it.
        let previous = previous.filter(|_| matches!(written, Written::Updated | Written::Removed));
        // What selectors see of both states, extracted here once (from the objects in hand)
        // for every filtered watcher of the live event.
        let body_fields = Selectable::of(&object);
        let prev_fields = previous.as_ref().map(Selectable::of);
        let selection_changed =
            written == Written::Updated && prev_fields.as_ref() != Some(&body_fields);
        let prev = previous
            .map(|p| serde_json::to_string(&p))
            .transpose()
            .map_err(|e| AppError::internal(format!("database write failed: {e}")))?;
        let event = batch.stage(&mut object, written, prev, selection_changed)?;
        event.body_fields = Some(body_fields);
        event.prev_fields = prev_fields;
        self.done = Some((object, written, extra));
        Ok(())
    }

    fn answer(mut self: Box<Self>, outcome: Result<Committed, AppError>) {
        let answer = outcome.and_then(|committed| {
            let (object, written, extra) = self
                .done
                .take()
                .ok_or_else(|| AppError::internal("database write failed: the write never ran"))?;
            Ok((object, written, extra, committed.compact))
        });
        // The request may have gone away meanwhile; its write stands.
        let _ = self.reply.send(answer);
    }
}
