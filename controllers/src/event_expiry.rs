//! Event expiry: events that last happened longer ago than `--event-ttl` (default 1 h) are
//! deleted, as Kubernetes' events expire with their etcd lease.
//!
//! [`expired`] decides (pure); `run` lists the events every quarter of the TTL (between
//! 100 ms and a minute) and deletes what it names, each by its uid, so an event written
//! again since (a new one of the same name) is left alone.

use std::time::Duration;

use kohakuriver_api::{Event, Resource, Timestamp};
use kohakuriver_client::{Api, ListParams};
use tokio_util::sync::CancellationToken;

use crate::ControllersConfig;

/// The events (name, uid) that last happened more than `ttl` before `now`. An event with no
/// time at all is judged by its creation.
pub fn expired<'a>(
    events: impl IntoIterator<Item = &'a Event>,
    now: Timestamp,
    ttl: Duration,
) -> Vec<(String, String)> {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    events
        .into_iter()
        .filter(|e| e.last_seen().is_some_and(|t| now - t > ttl))
        .map(|e| {
            (
                e.name().to_string(),
                e.metadata.uid.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// How often the expiry looks: a quarter of the TTL, at least 100 ms, at most a minute.
pub fn period(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Deletes expired events until shutdown.
pub(crate) async fn run(api: Api<Event>, config: ControllersConfig, shutdown: CancellationToken) {
    let every = period(config.event_ttl);
    loop {
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                let now = config.clock.now();
                for (name, uid) in expired(&list.items, now, config.event_ttl) {
                    match api.delete_uid(&name, &uid).await {
                        Ok(_) => tracing::debug!(event = %name, "expired event deleted"),
                        Err(e) if e.is_not_found() || e.is_conflict() => {}
                        Err(error) => {
                            tracing::warn!(%error, event = %name, "cannot delete an expired event")
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list events to expire them"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::{EventSource, EventType, InvolvedObject};

    fn at(s: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn event(name: &str, last: Option<i64>, created: Option<i64>) -> Event {
        let mut e = Event::new(
            name,
            InvolvedObject::default(),
            EventType::Normal,
            "Started",
            "",
            EventSource::default(),
            at(0),
        );
        e.first_timestamp = None;
        e.last_timestamp = last.map(at);
        e.metadata.creation_timestamp = created.map(at);
        e.metadata.uid = Some(format!("uid-{name}"));
        e
    }

    #[test]
    fn expires_by_last_time_seen() {
        let hour = Duration::from_secs(3600);
        let events = [
            event("old", Some(0), Some(0)),
            event("repeated-lately", Some(3000), Some(0)),
            event("exactly-the-ttl", Some(600), None),
            event("untimed-old", None, Some(0)),
            event("untimed-new", None, Some(3500)),
            event("no-time-at-all", None, None),
        ];
        let gone: Vec<String> = expired(&events, at(4200), hour)
            .into_iter()
            .map(|(name, uid)| format!("{name} {uid}"))
            .collect();
        assert_eq!(gone, ["old uid-old", "untimed-old uid-untimed-old"]);
    }

    #[test]
    fn periods() {
        let s = Duration::from_secs;
        assert_eq!(period(s(3600)), s(60));
        assert_eq!(period(s(2)), Duration::from_millis(500));
        assert_eq!(
            period(Duration::from_millis(10)),
            Duration::from_millis(100)
        );
    }
}
