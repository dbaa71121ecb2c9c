//! Folding repeats (pure): which occurrences are "the same event", the event's name, and
//! the object to write for an aggregate, as Kubernetes' event logger does it.
//!
//! Two occurrences fold when they name the same object (kind, name, uid), type, reason,
//! message and source; only the time differs. Their event is named `<object>.<hash>`, the
//! hash taken over that key, so every writer (and the same writer after a restart) folds
//! into the same stored event: create, or on `AlreadyExists` read it and add.

use kohakuriver_api::event::MAX_MESSAGE_CHARS;
use kohakuriver_api::{Event, EventSource, EventType, InvolvedObject, Timestamp};
use sha2::{Digest, Sha256};

/// The most characters of an event name (a DNS subdomain).
const MAX_NAME: usize = 253;
/// Hex characters of the hash in a name.
const HASH_CHARS: usize = 16;

/// What makes repeats the same event.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FoldKey {
    /// The object.
    pub involved: InvolvedObject,
    /// Normal or Warning.
    pub type_: EventType,
    /// The reason.
    pub reason: String,
    /// The message, already cut to what is stored.
    pub message: String,
    /// Who reports it.
    pub source: EventSource,
}

impl FoldKey {
    /// The key of an occurrence; the message is cut to [`MAX_MESSAGE_CHARS`] first, so two
    /// messages that differ only past the cut fold too.
    pub fn new(
        involved: InvolvedObject,
        type_: EventType,
        reason: &str,
        message: &str,
        source: EventSource,
    ) -> FoldKey {
        FoldKey {
            involved,
            type_,
            reason: reason.to_string(),
            message: cut(message),
            source,
        }
    }

    /// The per-object budget's key: writes about one object share one bucket.
    pub fn object(&self) -> &InvolvedObject {
        &self.involved
    }

    /// `<object>.<hash>`: the object's name (shortened so the whole fits in 253
    /// characters) and 16 hex characters of SHA-256 over the whole key.
    pub fn event_name(&self) -> String {
        let mut hasher = Sha256::new();
        let i = &self.involved;
        for part in [
            i.kind.as_str(),
            i.name.as_str(),
            i.uid.as_deref().unwrap_or(""),
            &self.type_.to_string(),
            &self.reason,
            &self.message,
            &self.source.component,
            self.source.host.as_deref().unwrap_or(""),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        let hash: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let room = MAX_NAME - HASH_CHARS - 1;
        let object: String = i.name.chars().take(room).collect();
        let object = object.trim_end_matches(['.', '-']);
        format!("{object}.{}", &hash[..HASH_CHARS])
    }
}

/// `message` cut to [`MAX_MESSAGE_CHARS`], ending with `…` when cut.
fn cut(message: &str) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        return message.to_string();
    }
    let mut out: String = message.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    out.push('…');
    out
}

/// What the recorder knows of one folded event.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    /// The owner of the involved object (a task's `metadata.owner`), kept on the event.
    pub owner: Option<String>,
    /// When it first happened (in this process, or as stored).
    pub first: Timestamp,
    /// When it last happened.
    pub last: Timestamp,
    /// Occurrences not yet in the stored event.
    pub unwritten: u32,
    /// The event as last stored (its count and `resourceVersion`), when known.
    pub stored: Option<Event>,
}

impl Aggregate {
    /// A first occurrence at `at`.
    pub fn new(owner: Option<String>, at: Timestamp) -> Aggregate {
        Aggregate {
            owner,
            first: at,
            last: at,
            unwritten: 1,
            stored: None,
        }
    }

    /// One more occurrence at `at`.
    pub fn repeat(&mut self, at: Timestamp) {
        self.unwritten = self.unwritten.saturating_add(1);
        self.last = self.last.max(at);
    }
}

/// The event to write for `key` with `unwritten` more occurrences: the stored one with its
/// count raised and `lastTimestamp` moved (its `resourceVersion` kept as the precondition),
/// or a new one counting them.
pub fn to_write(key: &FoldKey, aggregate: &Aggregate, unwritten: u32) -> Event {
    match &aggregate.stored {
        Some(stored) => {
            let mut e = stored.clone();
            e.count = e.count.saturating_add(unwritten);
            e.last_timestamp = Some(
                e.last_timestamp
                    .map_or(aggregate.last, |t| t.max(aggregate.last)),
            );
            e
        }
        None => {
            let mut e = Event::new(
                key.event_name(),
                key.involved.clone(),
                key.type_,
                key.reason.clone(),
                key.message.clone(),
                key.source.clone(),
                aggregate.first,
            );
            e.count = unwritten.max(1);
            e.last_timestamp = Some(aggregate.last);
            e.metadata.owner = aggregate.owner.clone();
            e
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::Resource;
    use kohakuriver_api::event::validate_event;

    fn at(s: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn object(name: &str, uid: &str) -> InvolvedObject {
        InvolvedObject {
            kind: "Task".into(),
            name: name.into(),
            uid: Some(uid.into()),
            api_version: None,
        }
    }

    fn key(name: &str, uid: &str, reason: &str, message: &str, host: Option<&str>) -> FoldKey {
        let source = EventSource {
            component: "agent".into(),
            host: host.map(str::to_string),
        };
        FoldKey::new(
            object(name, uid),
            EventType::Normal,
            reason,
            message,
            source,
        )
    }

    #[test]
    fn what_folds_and_what_does_not() {
        let base = key("t", "u1", "Exited", "exit code 1", Some("n1"));
        let cases = [
            (
                "same everything",
                key("t", "u1", "Exited", "exit code 1", Some("n1")),
                true,
            ),
            (
                "other message",
                key("t", "u1", "Exited", "exit code 2", Some("n1")),
                false,
            ),
            (
                "other reason",
                key("t", "u1", "Started", "exit code 1", Some("n1")),
                false,
            ),
            (
                "other task of that name",
                key("t", "u2", "Exited", "exit code 1", Some("n1")),
                false,
            ),
            (
                "other node",
                key("t", "u1", "Exited", "exit code 1", Some("n2")),
                false,
            ),
            (
                "other object",
                key("s", "u1", "Exited", "exit code 1", Some("n1")),
                false,
            ),
        ];
        for (what, other, folds) in cases {
            assert_eq!(other == base, folds, "{what}");
            assert_eq!(other.event_name() == base.event_name(), folds, "{what}");
        }
        let long = "x".repeat(2000);
        let mut longer = long.clone();
        longer.push('y');
        assert_eq!(
            key("t", "u", "R", &long, None),
            key("t", "u", "R", &longer, None)
        );
    }

    #[test]
    fn names_are_the_object_and_a_stable_hash_and_always_valid() {
        let name = key("train", "u1", "Exited", "exit code 1", None).event_name();
        assert!(name.starts_with("train."), "{name}");
        assert_eq!(name.len(), "train.".len() + 16);
        assert_eq!(
            name,
            key("train", "u1", "Exited", "exit code 1", None).event_name()
        );
        // A long valid name (labels of 60 characters) stays a valid name once shortened.
        let long = [&"a".repeat(60)[..]; 4].join(".") + ".b-c";
        let name = key(&long, "u1", "Exited", "m", None).event_name();
        assert!(name.len() <= 253, "{}", name.len());
        let e = to_write(
            &key(&long, "u1", "Exited", "m", None),
            &Aggregate::new(None, at(0)),
            1,
        );
        assert_eq!(validate_event(&e), vec![]);
    }

    #[test]
    fn writes_create_then_raise_the_stored_count() {
        let k = key("t", "u1", "Exited", "exit code 1", Some("n1"));
        let mut agg = Aggregate::new(Some("alice".into()), at(0));
        agg.repeat(at(5));
        agg.repeat(at(3));
        assert_eq!((agg.unwritten, agg.last), (3, at(5)));
        let new = to_write(&k, &agg, agg.unwritten);
        assert_eq!(new.count, 3);
        assert_eq!(
            (new.first_timestamp, new.last_timestamp),
            (Some(at(0)), Some(at(5)))
        );
        assert_eq!(new.metadata.owner.as_deref(), Some("alice"));
        assert_eq!(new.name(), k.event_name());
        let mut stored = new.clone();
        stored.metadata.resource_version = Some(7);
        stored.count = 10;
        agg.stored = Some(stored);
        agg.repeat(at(9));
        let raised = to_write(&k, &agg, 2);
        assert_eq!((raised.count, raised.resource_version()), (12, 7));
        assert_eq!(raised.last_timestamp, Some(at(9)));
    }
}
