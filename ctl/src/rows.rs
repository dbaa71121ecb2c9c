//! Table columns of each kind, as `get` prints them: the columns and cells come from
//! `kohakuriver_api::columns`, the same ones the server sends kubectl as a `Table`.

use kohakuriver_api::Timestamp;
use kohakuriver_api::columns::{Tabular, header, text_row};

pub use kohakuriver_api::columns::{allocation_summary, node_status, task_image};

/// A kind that `get` can show as a table.
pub trait Columns: Tabular {
    /// The header row; `wide` adds columns.
    fn header(wide: bool) -> Vec<String> {
        header::<Self>(wide)
    }
    /// One row; same length as the header.
    fn row(&self, wide: bool, now: Timestamp) -> Vec<String> {
        text_row(self, wide, now)
    }
}

impl<R: Tabular> Columns for R {}
