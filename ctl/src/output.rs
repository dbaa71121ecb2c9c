//! Output for people and programs: aligned tables, ages, and YAML/JSON documents.
//!
//! Data goes to stdout; diagnostics go to stderr (printed by the caller).

use std::fmt::Write as _;
use std::time::Duration;

use kohakuriver_api::{List, ListMeta, Resource, Timestamp};
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
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
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

/// A duration as `kubectl` shows ages: `45s`, `5m30s`, `42m`, `5h30m`, `30h`, `12d`, `3y`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (m, h, day) = (60, 3600, 86_400);
    if s < 2 * m {
        format!("{s}s")
    } else if s < 10 * m {
        match s % m {
            0 => format!("{}m", s / m),
            sec => format!("{}m{sec}s", s / m),
        }
    } else if s < 3 * h {
        format!("{}m", s / m)
    } else if s < 8 * h {
        match (s % h) / m {
            0 => format!("{}h", s / h),
            min => format!("{}h{min}m", s / h),
        }
    } else if s < 2 * day {
        format!("{}h", s / h)
    } else if s < 365 * 2 * day {
        format!("{}d", s / day)
    } else {
        format!("{}y", s / (365 * day))
    }
}

/// How long ago `t` was, for an AGE column; `<unknown>` when not set.
pub fn age(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => human_duration((now - t).to_std().unwrap_or_default()),
        None => "<unknown>".to_string(),
    }
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
        metadata: ListMeta { resource_version },
        items,
    }
}

/// Shortens `text` to at most `max` characters, ending with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_like_kubectl() {
        let check = |s: u64, want: &str| assert_eq!(human_duration(Duration::from_secs(s)), want);
        check(0, "0s");
        check(119, "119s");
        check(120, "2m");
        check(330, "5m30s");
        check(2520, "42m");
        check(3 * 3600, "3h");
        check(5 * 3600 + 1800, "5h30m");
        check(30 * 3600, "30h");
        check(12 * 86_400, "12d");
        check(800 * 86_400, "2y");
    }

    #[test]
    fn age_of_future_time_is_zero() {
        let now = chrono::DateTime::from_timestamp(100, 0).unwrap();
        let later = chrono::DateTime::from_timestamp(200, 0).unwrap();
        assert_eq!(age(Some(later), now), "0s");
        assert_eq!(age(None, now), "<unknown>");
    }

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

    #[test]
    fn truncates_on_characters() {
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo world", 5), "héll…");
    }
}
