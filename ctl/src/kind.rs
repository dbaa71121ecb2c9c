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

/// The kind a command's first argument names, where `task/NAME` also names the first
/// object: NAME goes before the other `names` (`get` and `delete` take both forms).
pub fn kind_and_names(arg: &str, names: &mut Vec<String>) -> Result<Kind, String> {
    match split_kind_name(arg) {
        Some((kind, name)) => {
            names.insert(0, name.to_string());
            Ok(kind)
        }
        None => arg.parse(),
    }
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

    #[test]
    fn kind_and_names_table() {
        // (argument, names given, the kind and names wanted or the error's start)
        type Case<'a> = (
            &'a str,
            &'a [&'a str],
            Result<(Kind, &'a [&'a str]), &'a str>,
        );
        let cases: &[Case] = &[
            ("tasks", &["a", "b"], Ok((Kind::Task, &["a", "b"]))),
            ("task/a", &["b"], Ok((Kind::Task, &["a", "b"]))),
            ("tg/g", &[], Ok((Kind::TaskGroup, &["g"]))),
            ("node", &[], Ok((Kind::Node, &[]))),
            ("pods", &["a"], Err("unknown kind \"pods\"")),
            ("pods/a", &[], Err("unknown kind \"pods/a\"")),
        ];
        for (arg, names, want) in cases {
            let mut got: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            match (kind_and_names(arg, &mut got), want) {
                (Ok(kind), Ok((want_kind, want_names))) => {
                    let got: Vec<&str> = got.iter().map(String::as_str).collect();
                    assert_eq!((kind, got.as_slice()), (*want_kind, *want_names), "{arg}")
                }
                (Err(e), Err(start)) => assert!(e.starts_with(start), "{arg}: {e}"),
                (got, want) => panic!("{arg}: got {got:?}, want {want:?}"),
            }
        }
    }
}
