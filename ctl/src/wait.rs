//! Waiting for objects to change, through the client's watcher (no polling).

use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use kohakuriver_api::Resource;
use kohakuriver_client::Api;

/// Waits until the object named `name` no longer exists, or fails after `timeout`.
pub async fn until_deleted<R: Resource>(
    api: &Api<R>,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut states = api.watch_object(name);
    let gone = async {
        while let Some(state) = states.next().await {
            match state {
                Ok(None) => return Ok(()),
                Ok(Some(_)) => {}
                // The watcher retries by itself; an unreachable server is worth failing on.
                Err(e) if e.is_connect() => return Err(anyhow::Error::new(e)),
                Err(e) => tracing::debug!(error = %e, "watch error while waiting; retrying"),
            }
        }
        bail!("the watch ended unexpectedly")
    };
    tokio::time::timeout(timeout, gone)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {} waiting", humanize(timeout)))?
        .with_context(|| format!("while waiting for {}/{name} to be deleted", R::SINGULAR))
}

/// Parses a duration such as `60s`, `2m`, `1h30m`, `30d`, `500ms` or a plain number of
/// seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let bad = || format!("invalid duration {text:?}; write e.g. 30s, 5m, 1h30m, 30d or 500ms");
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value * 60),
            "h" => Duration::from_secs(value * 3600),
            "d" => Duration::from_secs(value * 86_400),
            _ => return Err(bad()),
        };
        total += unit;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = |s: &str, ms: u64| assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)));
        ok("60", 60_000);
        ok("60s", 60_000);
        ok("2m", 120_000);
        ok("1h30m", 5_400_000);
        ok("500ms", 500);
        ok("30d", 30 * 86_400_000);
        for bad in ["", "s", "5x", "1.5s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
