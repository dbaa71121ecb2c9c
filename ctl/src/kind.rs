//! The kinds the CLI names on its command line: `task`, `taskgroup` (`tg`), `node`, and
//! their plurals.

use std::str::FromStr;

/// A kind of object, as typed by the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `task`, `tasks`, `t`.
    Task,
    /// `node`, `nodes`, `no`.
    Node,
    /// `taskgroup`, `taskgroups`, `tg`, `group`, `groups`.
    TaskGroup,
    /// `event`, `events`, `ev`.
    Event,
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        match s.to_ascii_lowercase().as_str() {
            "task" | "tasks" | "t" => Ok(Kind::Task),
            "node" | "nodes" | "no" => Ok(Kind::Node),
            "taskgroup" | "taskgroups" | "tg" | "group" | "groups" => Ok(Kind::TaskGroup),
            "event" | "events" | "ev" => Ok(Kind::Event),
            other => Err(format!(
                "unknown kind {other:?}; expected task, taskgroup (tg), node or event (ev), or their plurals"
            )),
        }
    }
}

/// Splits `task/NAME` into its kind and name, as printed by `-o name`.
pub fn split_kind_name(arg: &str) -> Option<(Kind, &str)> {
    let (kind, name) = arg.split_once('/')?;
    Some((kind.parse().ok()?, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kinds() {
        assert_eq!("Tasks".parse(), Ok(Kind::Task));
        assert_eq!("node".parse(), Ok(Kind::Node));
        assert!("pods".parse::<Kind>().unwrap_err().contains("\"pods\""));
        assert_eq!(split_kind_name("task/a"), Some((Kind::Task, "a")));
        assert_eq!(split_kind_name("a"), None);
        assert_eq!("tg".parse(), Ok(Kind::TaskGroup));
        assert_eq!(split_kind_name("group/g"), Some((Kind::TaskGroup, "g")));
        assert_eq!("ev".parse(), Ok(Kind::Event));
    }
}
