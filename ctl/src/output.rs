//! Output for people and programs: aligned tables, ages, and YAML/JSON documents.
//!
//! Data goes to stdout; diagnostics go to stderr (printed by the caller).

use std::fmt::Write as _;

pub use kohakuriver_api::columns::age;
use kohakuriver_api::{List, ListMeta, Resource};
use serde::Serialize;

/// How `get` prints objects.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// A table (the default).
    #[default]
    #[value(skip)]
    Table,
    /// A table with more columns.
    Wide,
    /// YAML: one object, or a list.
    Yaml,
    /// JSON: one object, or a list.
    Json,
    /// `kind/name`, one per line.
    Name,
}

/// Columns of text, padded to line up, like `kubectl get`.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with this header row.
    pub fn new<S: AsRef<str>>(header: &[S]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.as_ref().to_string()).collect()],
        }
    }

    /// Adds a row.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The column widths: the widest cell of each column.
    pub fn widths(&self) -> Vec<usize> {
        let mut widths = Vec::new();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                let w = cell.chars().count();
                if i >= widths.len() {
                    widths.push(w);
                } else {
                    widths[i] = widths[i].max(w);
                }
            }
        }
        widths
    }

    /// The table as text, columns three spaces apart, no trailing spaces.
    pub fn render(&self) -> String {
        let widths = self.widths();
        let mut out = String::new();
        for row in &self.rows {
            out.push_str(&render_row(row, &widths));
            out.push('\n');
        }
        out
    }
}

/// One row padded to `widths`; the last cell is not padded.
pub fn render_row(row: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in row.iter().enumerate() {
        if i + 1 == row.len() {
            line.push_str(cell);
        } else {
            let width = widths.get(i).copied().unwrap_or(0);
            let _ = write!(line, "{cell:<width$}   ");
        }
    }
    line.trim_end().to_string()
}

/// A value as YAML text (one document, no leading `---`).
pub fn to_yaml<T: Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_yaml::to_string(value)?)
}

/// A value as pretty JSON text with a final newline.
pub fn to_json<T: Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// `kind/name`, as `-o name` prints and apply reports.
pub fn kind_name<R: Resource>(obj: &R) -> String {
    format!("{}/{}", R::SINGULAR, obj.name())
}

/// A `List` of these objects for `-o yaml|json` of several objects.
pub fn list_of<R: Resource>(items: Vec<R>, resource_version: u64) -> List<R> {
    List {
        api_version: kohakuriver_api::API_VERSION.to_string(),
        kind: format!("{}List", R::KIND),
        metadata: ListMeta {
            resource_version,
            ..ListMeta::default()
        },
        items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["NAME", "PHASE", "AGE"]);
        t.push(vec!["a-long-name".into(), "Running".into(), "5s".into()]);
        t.push(vec!["b".into(), "".into(), "10m".into()]);
        assert_eq!(
            t.render(),
            "NAME          PHASE     AGE\na-long-name   Running   5s\nb                       10m\n"
        );
    }
}
