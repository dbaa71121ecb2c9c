//! A stored change as the watch history and the live channel carry it.

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
}

impl Event {
    /// The event as one NDJSON line of a watch stream.
    pub fn to_line(&self) -> String {
        format!(
            "{{\"type\":\"{}\",\"object\":{}}}\n",
            self.event_type.as_str(),
            self.body
        )
    }
}
