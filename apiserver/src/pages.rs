//! Paged lists (`limit` and `continue`), as in Kubernetes: pure decisions, no IO.
//!
//! A paged list is consistent at one revision R, the revision of its first page. The
//! `continue` token carries R and the last name served. A later page is the list as of R:
//! the objects not written since R (their stored body is their state at R), plus, for the
//! names written after R, their state at R taken from the watch history (the `prev` of the
//! first event after R, or nothing when that event created the object). So every object
//! that existed at R is served exactly once, in name order, however the store changes
//! between pages. When the history no longer reaches back to R the list is `410 Gone`.

use std::collections::BTreeMap;
use std::iter::Peekable;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::store::EventType;

/// Where the next page of a paged list starts: the list's revision and the last name
/// served. On the wire it is opaque (base64 of a small JSON object).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continue {
    /// The revision every page of the list is read at.
    #[serde(rename = "rv")]
    pub revision: u64,
    /// The last name served; the next page starts after it.
    #[serde(rename = "after")]
    pub after: String,
    /// How many items the later pages hold, when the list counted them (no selector):
    /// each page subtracts what it served instead of counting again.
    #[serde(rename = "left", default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
}

impl Continue {
    /// The opaque token.
    pub fn encode(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a token, saying what is wrong with one that is not ours.
    pub fn decode(token: &str) -> Result<Continue, String> {
        let bad = |why: &str| {
            format!("continue token {token:?} is not valid ({why}); list again without continue")
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|_| bad("not base64"))?;
        serde_json::from_slice(&bytes).map_err(|_| bad("not a token this server made"))
    }
}

/// One event after the list's revision, as the history gives it (oldest first).
#[derive(Clone, Debug, PartialEq)]
pub struct Later {
    /// The object's name.
    pub name: String,
    /// What the event did.
    pub event_type: EventType,
    /// The object before the event (absent for creations, and in old histories).
    pub prev: Option<String>,
}

/// The state as of R of every name written after R, from the events after R oldest first:
/// `Some(body)` for an object that existed at R, `None` for one created after it. Names
/// not after `after` are left out. An error names an object whose earlier state the
/// history did not keep.
pub fn restore(
    later: impl IntoIterator<Item = Later>,
    after: &str,
) -> Result<BTreeMap<String, Option<String>>, String> {
    let mut states = BTreeMap::new();
    for event in later {
        if event.name.as_str() <= after || states.contains_key(&event.name) {
            continue;
        }
        let state = match event.event_type {
            EventType::Added => None,
            EventType::Modified | EventType::Deleted => match event.prev {
                Some(prev) => Some(prev),
                None => return Err(event.name),
            },
        };
        states.insert(event.name, state);
    }
    Ok(states)
}

/// The list as of R in name order: `unchanged` (name and body of the objects not written
/// since R, in name order) merged with the `restored` states of the names written since.
pub fn as_of<I, E>(unchanged: I, restored: BTreeMap<String, Option<String>>) -> AsOf<I>
where
    I: Iterator<Item = Result<(String, String), E>>,
{
    AsOf {
        unchanged: unchanged.peekable(),
        restored: restored
            .into_iter()
            .filter_map(|(name, body)| body.map(|b| (name, b)))
            .collect::<Vec<_>>()
            .into_iter()
            .peekable(),
    }
}

/// The merge made by [`as_of`].
pub struct AsOf<I: Iterator> {
    unchanged: Peekable<I>,
    restored: Peekable<std::vec::IntoIter<(String, String)>>,
}

impl<I, E> Iterator for AsOf<I>
where
    I: Iterator<Item = Result<(String, String), E>>,
{
    type Item = Result<(String, String), E>;

    fn next(&mut self) -> Option<Self::Item> {
        let take_restored = match (self.unchanged.peek(), self.restored.peek()) {
            (_, None) => false,
            (None, Some(_)) => true,
            // An error is passed on at once.
            (Some(Err(_)), _) => false,
            (Some(Ok((a, _))), Some((b, _))) => b < a,
        };
        if take_restored {
            self.restored.next().map(Ok)
        } else {
            self.unchanged.next()
        }
    }
}

/// One page taken from a list.
#[derive(Debug, PartialEq)]
pub struct Page {
    /// The bodies served, in name order.
    pub bodies: Vec<String>,
    /// The last name looked at, when items remain after it.
    pub more_after: Option<String>,
}

/// Takes up to `limit` (0: no limit) items that `matches` from `items`, and says whether
/// any item remains after the last one looked at. As in Kubernetes, with a selector the
/// last page may be short, or even empty, because what remains need not match.
pub fn take<E>(
    items: impl Iterator<Item = Result<(String, String), E>>,
    limit: usize,
    matches: impl Fn(&str) -> bool,
) -> Result<Page, E> {
    let mut items = items.peekable();
    let mut bodies = Vec::new();
    let mut last = None;
    while limit == 0 || bodies.len() < limit {
        let Some(item) = items.next() else {
            return Ok(Page {
                bodies,
                more_after: None,
            });
        };
        let (name, body) = item?;
        if matches(&body) {
            bodies.push(body);
        }
        last = Some(name);
    }
    let more_after = match items.peek() {
        Some(_) => last,
        None => None,
    };
    Ok(Page { bodies, more_after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_named() {
        let token = Continue {
            revision: 42,
            after: "task-é/1".into(),
            remaining: Some(7),
        };
        let text = token.encode();
        assert!(
            text.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        );
        assert_eq!(Continue::decode(&text).unwrap(), token);
        let e = Continue::decode("!!!").unwrap_err();
        assert!(e.contains("\"!!!\"") && e.contains("list again"), "{e}");
        let e = Continue::decode(&URL_SAFE_NO_PAD.encode("{\"x\":1}")).unwrap_err();
        assert!(e.contains("not a token"), "{e}");
    }

    fn later(name: &str, event_type: EventType, prev: Option<&str>) -> Later {
        Later {
            name: name.into(),
            event_type,
            prev: prev.map(str::to_string),
        }
    }

    fn rows(items: &[(&str, &str)]) -> impl Iterator<Item = Result<(String, String), ()>> {
        items
            .iter()
            .map(|(n, b)| Ok((n.to_string(), b.to_string())))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The names as of R, rendered `name=body`.
    fn check(unchanged: &[(&str, &str)], later_events: Vec<Later>, after: &str, want: &str) {
        let restored = restore(later_events, after).unwrap();
        let got: Vec<String> = as_of(rows(unchanged), restored)
            .map(|r| r.map(|(n, b)| format!("{n}={b}")).unwrap())
            .collect();
        assert_eq!(got.join(" "), want);
    }

    #[test]
    fn the_list_as_of_r_uses_the_first_change_after_r() {
        use EventType::*;
        // Nothing changed.
        check(&[("a", "1"), ("c", "1")], vec![], "", "a=1 c=1");
        // b was modified twice and d deleted after R: their state at R is the first prev.
        check(
            &[("a", "1"), ("c", "1")],
            vec![
                later("b", Modified, Some("b@R")),
                later("d", Deleted, Some("d@R")),
                later("b", Modified, Some("b@later")),
            ],
            "",
            "a=1 b=b@R c=1 d=d@R",
        );
        // e was created after R (then changed and deleted): it is not in the list.
        check(
            &[("a", "1")],
            vec![
                later("e", Added, None),
                later("e", Modified, Some("e1")),
                later("e", Deleted, Some("e2")),
            ],
            "",
            "a=1",
        );
        // Only names after the token's name.
        check(
            &[("c", "1")],
            vec![
                later("a", Deleted, Some("x")),
                later("d", Deleted, Some("d@R")),
            ],
            "b",
            "c=1 d=d@R",
        );
    }

    #[test]
    fn a_change_without_its_earlier_state_is_named() {
        let e = restore(vec![later("a", EventType::Modified, None)], "").unwrap_err();
        assert_eq!(e, "a");
    }

    #[test]
    fn pages_stop_at_the_limit_and_say_whether_more_remain() {
        let all = [("a", "x"), ("b", "y"), ("c", "x")];
        let page = take(rows(&all), 2, |_| true).unwrap();
        assert_eq!(
            (page.bodies.len(), page.more_after.as_deref()),
            (2, Some("b"))
        );
        let page = take(rows(&all), 3, |_| true).unwrap();
        assert_eq!((page.bodies.len(), page.more_after), (3, None));
        let page = take(rows(&all), 0, |_| true).unwrap();
        assert_eq!((page.bodies.len(), page.more_after), (3, None));
        // A selector reads on until the page is full.
        let page = take(rows(&all), 1, |b| b == "y").unwrap();
        assert_eq!(
            (page.bodies, page.more_after.as_deref()),
            (vec!["y".to_string()], Some("b"))
        );
        let page = take(rows(&all), 2, |b| b == "x").unwrap();
        assert_eq!((page.bodies.len(), page.more_after), (2, None));
    }
}
