//! A stored change as the watch history and the live channel carry it.

use kohakuriver_api::Selectable;

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The word used on the wire and in the history table.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }

    pub(crate) fn parse(s: &str) -> EventType {
        match s {
            "ADDED" => EventType::Added,
            "DELETED" => EventType::Deleted,
            _ => EventType::Modified,
        }
    }
}

/// One stored change: the revision it got and the object's JSON after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The revision of the write.
    pub rv: u64,
    /// `Task` or `Node`.
    pub kind: String,
    /// Added, modified or deleted.
    pub event_type: EventType,
    /// The object as stored (for deletes, as last stored), JSON.
    pub body: String,
    /// For a modification or a removal: the object before it, JSON, which is its state as
    /// of any revision between its previous write and `rv` (paged lists read it). None for a
    /// creation, and in events stored before every change kept it.
    pub prev: Option<String>,
    /// The change may have moved the object into or out of a selection (its labels or
    /// selectable fields changed), so a filtered watcher must look at `prev`. When false,
    /// `prev` matches a selector exactly when `body` does, and is not parsed.
    pub selection_changed: bool,
    /// What selectors see of `body`, extracted once when the write was made, so the watch
    /// hub matches every filtered watcher against it without parsing `body`. `None` in
    /// events read back from the history, whose watchers parse `body`.
    pub body_fields: Option<Selectable>,
    /// The same of `prev`.
    pub prev_fields: Option<Selectable>,
}

impl Event {
    /// The event as one NDJSON line of a watch stream.
    pub fn to_line(&self) -> String {
        line(self.event_type, &self.body)
    }

    /// The line a watcher whose selection is `matches` sees, if any, as in Kubernetes: an
    /// object that enters the selection is `ADDED`, one that leaves it is `DELETED` (with
    /// its new state), one that stays is `MODIFIED`. `matches` is asked about a state's
    /// JSON and, when extracted, what selectors see of it (which it should use instead).
    pub fn line_for(&self, matches: impl Fn(&str, Option<&Selectable>) -> bool) -> Option<String> {
        let now = matches(&self.body, self.body_fields.as_ref());
        let event_type = match self.event_type {
            EventType::Modified => {
                let before = match self.prev.as_deref() {
                    Some(prev) if self.selection_changed => {
                        matches(prev, self.prev_fields.as_ref())
                    }
                    _ => now,
                };
                match (before, now) {
                    (true, true) => EventType::Modified,
                    (false, true) => EventType::Added,
                    (true, false) => EventType::Deleted,
                    (false, false) => return None,
                }
            }
            other if now => other,
            _ => return None,
        };
        Some(line(event_type, &self.body))
    }
}

fn line(event_type: EventType, body: &str) -> String {
    format!(
        "{{\"type\":\"{}\",\"object\":{}}}\n",
        event_type.as_str(),
        body
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: EventType, body: &str, prev: Option<&str>) -> Event {
        Event {
            rv: 1,
            kind: "Task".into(),
            event_type,
            body: body.into(),
            prev: prev.map(str::to_string),
            selection_changed: prev.is_some(),
            body_fields: None,
            prev_fields: None,
        }
    }

    fn kind_of(line: Option<String>) -> Option<String> {
        line.map(|l| l.split('"').nth(3).unwrap_or_default().to_string())
    }

    #[test]
    fn selection_transitions_become_added_and_deleted() {
        let on_a = |b: &str, _: Option<&Selectable>| b == "a";
        let check = |t, body, prev, want: Option<&str>| {
            assert_eq!(
                kind_of(event(t, body, prev).line_for(on_a)).as_deref(),
                want,
                "{t:?} {prev:?} -> {body}"
            );
        };
        check(EventType::Modified, "a", None, Some("MODIFIED"));
        check(EventType::Modified, "b", None, None);
        check(EventType::Modified, "a", Some("a"), Some("MODIFIED"));
        check(EventType::Modified, "a", Some("b"), Some("ADDED"));
        check(EventType::Modified, "b", Some("a"), Some("DELETED"));
        check(EventType::Modified, "b", Some("c"), None);
        check(EventType::Added, "a", None, Some("ADDED"));
        check(EventType::Added, "b", None, None);
        check(EventType::Deleted, "a", None, Some("DELETED"));
        check(EventType::Deleted, "b", None, None);
        // A change that kept the labels and fields keeps its selection without parsing prev.
        let mut kept = event(EventType::Modified, "a", Some("b"));
        kept.selection_changed = false;
        assert_eq!(kind_of(kept.line_for(on_a)).as_deref(), Some("MODIFIED"));
    }

    #[test]
    fn extracted_fields_are_offered_with_each_state() {
        let bound = |node: &str| Selectable {
            fields: vec![("status.node", Some(node.to_string()))],
            ..Selectable::default()
        };
        let mut moved = event(EventType::Modified, "b", Some("a"));
        moved.body_fields = Some(bound("n2"));
        moved.prev_fields = Some(bound("n1"));
        // The bodies say nothing here: the extracted fields decide.
        let on_n1 =
            |_: &str, f: Option<&Selectable>| f.and_then(|f| f.field("status.node")) == Some("n1");
        assert_eq!(kind_of(moved.line_for(on_n1)).as_deref(), Some("DELETED"));
    }
}
