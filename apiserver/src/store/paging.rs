//! Paged lists: one page, read as of the list's revision from a [`View`] (the objects
//! unchanged since then, merged with the state then of those written since; see
//! `crate::pages`).

use rusqlite::params;

use super::db::read_failed;
use super::event::EventType;
use super::read::View;
use super::{ListPage, Store};
use crate::error::AppError;
use crate::pages::{self, Continue};
use kohakuriver_api::StatusReason;

impl View<'_> {
    /// One page of the list of a kind as of `revision`, after the name `after`: up to
    /// `limit` (0: all) objects that `matches`, narrowed by `node` or `phase` through the
    /// indexes, with how many remain after the page when `count` asks. The caller checked
    /// that the history reaches back to `revision`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn page(
        &self,
        kind: &str,
        node: Option<&str>,
        phase: Option<&str>,
        revision: u64,
        after: &str,
        limit: usize,
        matches: &dyn Fn(&str) -> bool,
        count: bool,
    ) -> Result<(pages::Page, Option<u64>), AppError> {
        let restored = if revision < self.revision {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT name, type, prev FROM events WHERE rv > ?1 AND kind = ?2 ORDER BY rv",
                )
                .map_err(read_failed)?;
            let later = stmt
                .query_map(params![revision as i64, kind], |row| {
                    Ok(pages::Later {
                        name: row.get(0)?,
                        event_type: EventType::parse(&row.get::<_, String>(1)?),
                        prev: row.get(2)?,
                    })
                })
                .map_err(read_failed)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(read_failed)?;
            pages::restore(later, after).map_err(|name| {
                AppError::new(
                    StatusReason::Expired,
                    format!(
                        "the history kept no state of {name} as of resourceVersion {revision}; list again from the start without continue"
                    ),
                )
            })?
        } else {
            Default::default()
        };
        let restored_names: Vec<String> = restored
            .iter()
            .filter(|(_, state)| state.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        let (sql, arg) = match (node, phase) {
            (Some(node), _) => (
                "SELECT name, body FROM objects INDEXED BY objects_by_node WHERE kind = ?1 AND node = ?4 AND name > ?2 AND rv <= ?3 ORDER BY name",
                Some(node),
            ),
            (None, Some(phase)) => (
                "SELECT name, body FROM objects INDEXED BY objects_by_phase WHERE kind = ?1 AND phase = ?4 AND name > ?2 AND rv <= ?3 ORDER BY name",
                Some(phase),
            ),
            (None, None) => (
                "SELECT name, body FROM objects WHERE kind = ?1 AND name > ?2 AND rv <= ?3 ORDER BY name",
                None,
            ),
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(read_failed)?;
        let pair =
            |row: &rusqlite::Row<'_>| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?));
        let rows = match arg {
            Some(arg) => stmt.query_map(params![kind, after, revision as i64, arg], pair),
            None => stmt.query_map(params![kind, after, revision as i64], pair),
        }
        .map_err(read_failed)?;
        let page =
            pages::take(pages::as_of(rows, restored), limit, matches).map_err(read_failed)?;
        let remaining = match (&page.more_after, count) {
            (Some(last), true) => {
                let unchanged: i64 = self
                    .conn
                    .prepare_cached(
                        "SELECT COUNT(*) FROM objects WHERE kind = ?1 AND name > ?2 AND rv <= ?3",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![kind, last, revision as i64], |r| r.get(0))
                    })
                    .map_err(read_failed)?;
                let restored = restored_names.iter().filter(|n| *n > last).count();
                Some(unchanged as u64 + restored as u64)
            }
            _ => None,
        };
        Ok((page, remaining))
    }
}

impl Store {
    /// One page of a paged list (`limit`, 0 for all), at the current revision or, with a
    /// `continue` token, at the token's revision after its name (see `crate::pages`); 410
    /// Expired when the history no longer reaches back to that revision. `matches` is the
    /// selection, applied to each object as of the list's revision; `count` asks for how
    /// many items remain after the page.
    #[allow(clippy::too_many_arguments)]
    pub async fn list_page(
        &self,
        kind: &'static str,
        node: Option<String>,
        phase: Option<String>,
        from: Option<Continue>,
        limit: usize,
        matches: impl Fn(&str) -> bool + Send + 'static,
        count: bool,
    ) -> Result<ListPage, AppError> {
        self.read(move |view| {
            let (revision, after, known) = match from {
                None => (view.revision, String::new(), None),
                Some(from) => {
                    // The compaction point is read in the same snapshot as the page, so a
                    // token that races a compaction is refused here or reads a whole page.
                    if from.revision < view.compacted || from.revision > view.revision {
                        return Err(AppError::new(
                            kohakuriver_api::StatusReason::Expired,
                            format!(
                                "the continue token's resourceVersion {} is not kept: the history holds {} to {}; list again from the start without continue",
                                from.revision, view.compacted, view.revision
                            ),
                        ));
                    }
                    (from.revision, from.after, from.remaining)
                }
            };
            // What the previous page left is what this one and the later ones hold, so only
            // a list's first page counts.
            let (page, counted) = view.page(
                kind,
                node.as_deref(),
                phase.as_deref(),
                revision,
                &after,
                limit,
                &matches,
                count && known.is_none(),
            )?;
            let remaining = match known {
                Some(known) if count => Some(known.saturating_sub(page.bodies.len() as u64)),
                _ => counted,
            }
            .filter(|_| page.more_after.is_some());
            Ok(ListPage {
                revision,
                bodies: page.bodies,
                next: page.more_after.map(|after| Continue {
                    revision,
                    after,
                    remaining,
                }),
                remaining,
            })
        })
        .await
    }
}
