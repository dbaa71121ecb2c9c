//! Who may do what with events. People read them (a user on a `--private-tasks` server only
//! those of their own tasks) and may not forge them; an admin may delete them. A node
//! writes and reads back only the events it reports itself (`source.host` its own name),
//! which is what the recorder's create-or-increment needs, and lists none. The
//! controllers' part is in [`super::authorize`]: everything, since they write events and
//! expire old ones.

use super::{Denial, Identity, Policy, Role, Target, Verb, deny};

/// A node's rights on events.
pub(super) fn node_on_events(
    who: &Identity,
    verb: Verb,
    target: &Target<'_>,
) -> Result<(), Denial> {
    use Verb::*;
    let refuse = |why: &str| deny(who, verb, target, why);
    match target {
        Target::Event(e) if e.source.host.as_deref() == Some(who.name.as_str()) => match verb {
            Get | Create | Update => Ok(()),
            _ => refuse("a node only writes and reads back the events it reports"),
        },
        Target::Event(_) => refuse(&format!(
            "a node reports events only as itself (source.host: {})",
            who.name
        )),
        _ => refuse("a node writes events; it does not list them"),
    }
}

/// A person's rights on events.
pub(super) fn person_on_events(
    who: &Identity,
    verb: Verb,
    target: &Target<'_>,
    policy: &Policy,
) -> Result<(), Denial> {
    use Verb::*;
    let role = who.role;
    let refuse = |why: &str| deny(who, verb, target, why);
    let private = match target {
        Target::Event(e) => {
            policy.private_tasks
                && role == Role::User
                && e.metadata.owner.as_deref() != Some(who.name.as_str())
        }
        _ => false,
    };
    match verb {
        Get if private => refuse("events of other users' tasks are private on this server"),
        Get | List | Watch => Ok(()),
        Delete if role == Role::Admin => Ok(()),
        _ => refuse(
            "events are written by the scheduler, the lifecycle controllers and the node agents; people read them and only an admin deletes them",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::authorize;
    use super::*;
    use crate::event::{Event, EventSource, EventType, InvolvedObject};
    use crate::task::Task;

    fn event(owner: Option<&str>, host: Option<&str>) -> Event {
        let mut e = Event::new(
            "t.1",
            InvolvedObject::of(&Task::test("t")),
            EventType::Normal,
            "Started",
            "started",
            EventSource {
                component: "agent".into(),
                host: host.map(str::to_string),
            },
            chrono::DateTime::from_timestamp(0, 0).unwrap(),
        );
        e.metadata.owner = owner.map(str::to_string);
        e
    }

    /// One line per (who, verb, event) and the answer.
    #[test]
    fn event_rights_table() {
        use Verb::*;
        let private = Policy {
            private_tasks: true,
            ..Policy::default()
        };
        let open = Policy::default();
        let mine = event(Some("alice"), Some("n1"));
        let theirs = event(Some("bob"), Some("n2"));
        type Case<'a> = (Role, &'a str, Verb, Target<'a>, &'a Policy, bool);
        let cases: Vec<Case<'_>> = vec![
            (Role::Viewer, "v", List, Target::Events, &open, true),
            (Role::Viewer, "v", Get, Target::Event(&theirs), &open, true),
            (
                Role::Viewer,
                "v",
                Create,
                Target::Event(&theirs),
                &open,
                false,
            ),
            (
                Role::User,
                "alice",
                Get,
                Target::Event(&mine),
                &private,
                true,
            ),
            (
                Role::User,
                "alice",
                Get,
                Target::Event(&theirs),
                &private,
                false,
            ),
            (
                Role::User,
                "alice",
                Get,
                Target::Event(&theirs),
                &open,
                true,
            ),
            (
                Role::User,
                "alice",
                Create,
                Target::Event(&mine),
                &open,
                false,
            ),
            (
                Role::User,
                "alice",
                Update,
                Target::Event(&mine),
                &open,
                false,
            ),
            (
                Role::Operator,
                "o",
                Delete,
                Target::Event(&mine),
                &open,
                false,
            ),
            (Role::Admin, "a", Delete, Target::Event(&mine), &open, true),
            (Role::Admin, "a", Create, Target::Event(&mine), &open, false),
            (Role::Node, "n1", Create, Target::Event(&mine), &open, true),
            (Role::Node, "n1", Update, Target::Event(&mine), &open, true),
            (Role::Node, "n1", Get, Target::Event(&mine), &open, true),
            (Role::Node, "n1", Delete, Target::Event(&mine), &open, false),
            (
                Role::Node,
                "n1",
                Create,
                Target::Event(&theirs),
                &open,
                false,
            ),
            (Role::Node, "n1", List, Target::Events, &open, false),
            (
                Role::Controllers,
                "c",
                Create,
                Target::Event(&theirs),
                &open,
                true,
            ),
            (
                Role::Controllers,
                "c",
                Delete,
                Target::Event(&theirs),
                &open,
                true,
            ),
            (Role::Controllers, "c", List, Target::Events, &open, true),
            (Role::Join, "j", List, Target::Events, &open, false),
        ];
        for (role, name, verb, target, policy, allowed) in cases {
            let who = Identity::new(name, role);
            let got = authorize(&who, verb, &target, policy);
            assert_eq!(got.is_ok(), allowed, "{who} {verb:?}: {got:?}");
        }
        let who = Identity::new("n1", Role::Node);
        let why = authorize(&who, Create, &Target::Event(&theirs), &open).unwrap_err();
        assert!(why.0.contains("source.host: n1"), "{why}");
    }
}
