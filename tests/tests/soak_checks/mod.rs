//! The soak's verdicts as pure functions: parsing its duration, finding double-booked cores
//! and GPUs in one list of tasks, and judging memory and file-descriptor figures. The load
//! driver (`soak.rs`) only samples and calls these, so each rule has its own unit test.

use std::collections::BTreeMap;
use std::time::Duration;

use kohakuriver_api::{CpuSet, Task};

/// `DURATION` of `scripts/soak.sh`: a whole number with `s`, `m` or `h` (`90s`, `2m`, `1h`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("duration {text:?}: give a whole number and s, m or h, e.g. 2m"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => {
            return Err(format!(
                "duration {text:?}: the unit must be s, m or h, e.g. 2m"
            ));
        }
    };
    if seconds < 30 {
        return Err(format!(
            "duration {text:?} is too short: at least 30s (a warm-up comes first)"
        ));
    }
    Ok(Duration::from_secs(seconds))
}

/// What one task holds on its node while it is bound and not terminal.
#[derive(Clone, Debug, PartialEq)]
pub struct Holding {
    pub task: String,
    pub node: String,
    pub cpus: Vec<u32>,
    pub gpus: Vec<u32>,
}

impl Holding {
    /// The holding of a task that holds resources (`Task::holds_allocation`), else none.
    pub fn of(task: &Task) -> Option<Holding> {
        if !task.holds_allocation() {
            return None;
        }
        let allocation = task.status.allocation.as_ref()?;
        let cpus = CpuSet::parse(&allocation.cpus).ok()?;
        Some(Holding {
            task: task.metadata.name.clone(),
            node: task.status.node.clone()?,
            cpus: cpus.iter().collect(),
            gpus: allocation.gpus.clone(),
        })
    }
}

/// Every core or GPU that two holdings of one snapshot claim on the same node, as messages
/// naming the node, the resource and both tasks; empty when nothing is double-booked.
pub fn double_bookings(holdings: &[Holding]) -> Vec<String> {
    let mut owner: BTreeMap<(&str, &str, u32), &str> = BTreeMap::new();
    let mut found = Vec::new();
    for h in holdings {
        let claims = h
            .cpus
            .iter()
            .map(|c| ("cpu", *c))
            .chain(h.gpus.iter().map(|g| ("gpu", *g)));
        for (kind, index) in claims {
            match owner.get(&(h.node.as_str(), kind, index)) {
                Some(other) => found.push(format!(
                    "node {}: {kind} {index} held by both {other} and {}",
                    h.node, h.task
                )),
                None => {
                    owner.insert((h.node.as_str(), kind, index), &h.task);
                }
            }
        }
    }
    found
}

/// Resident memory growth from the warm-up sample to the end, in percent.
pub fn growth_percent(warm_kib: u64, end_kib: u64) -> f64 {
    if warm_kib == 0 {
        return 0.0;
    }
    (end_kib as f64 - warm_kib as f64) * 100.0 / warm_kib as f64
}

/// The RSS verdict: growth after warm-up must stay below `limit_percent`.
pub fn check_rss(
    label: &str,
    warm_kib: u64,
    end_kib: u64,
    limit_percent: f64,
) -> Result<(), String> {
    let growth = growth_percent(warm_kib, end_kib);
    if growth < limit_percent {
        Ok(())
    } else {
        Err(format!(
            "{label} RSS grew {growth:.1} % after warm-up ({warm_kib} KiB -> {end_kib} KiB), limit {limit_percent} %"
        ))
    }
}

/// Open descriptors allowed above the warm-up count at the end (connections in flight).
pub fn fd_tolerance(warm: usize) -> usize {
    (warm / 10).max(8)
}

/// The descriptor verdict: the end count is at most the warm-up count plus the tolerance.
pub fn check_fds(label: &str, warm: usize, end: usize) -> Result<(), String> {
    let tolerance = fd_tolerance(warm);
    if end <= warm + tolerance {
        Ok(())
    } else {
        Err(format!(
            "{label} open file descriptors went from {warm} at warm-up to {end} at the end (tolerance {tolerance})"
        ))
    }
}

/// Acknowledged ids that the final list does not hold.
pub fn lost_tasks<'a>(
    acknowledged: &'a [String],
    present: &BTreeMap<String, String>,
) -> Vec<&'a str> {
    acknowledged
        .iter()
        .filter(|id| !present.contains_key(id.as_str()))
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(task: &str, node: &str, cpus: &[u32], gpus: &[u32]) -> Holding {
        Holding {
            task: task.into(),
            node: node.into(),
            cpus: cpus.to_vec(),
            gpus: gpus.to_vec(),
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("2").unwrap_err().contains("unit"));
        assert!(parse_duration("m").unwrap_err().contains("whole number"));
        assert!(parse_duration("10s").unwrap_err().contains("too short"));
    }

    #[test]
    fn disjoint_holdings_are_fine() {
        let hs = [
            hold("a", "n1", &[0], &[0]),
            hold("b", "n1", &[1], &[1]),
            hold("c", "n2", &[0, 1], &[0]),
        ];
        assert!(double_bookings(&hs).is_empty());
    }

    #[test]
    fn a_shared_core_or_gpu_is_named() {
        let hs = [hold("a", "n1", &[0, 1], &[]), hold("b", "n1", &[1], &[])];
        assert_eq!(
            double_bookings(&hs),
            ["node n1: cpu 1 held by both a and b"]
        );
        let hs = [hold("a", "n1", &[0], &[1]), hold("b", "n1", &[1], &[1])];
        assert_eq!(
            double_bookings(&hs),
            ["node n1: gpu 1 held by both a and b"]
        );
    }

    #[test]
    fn holdings_come_only_from_bound_live_tasks() {
        use kohakuriver_api::task::TaskPhase;
        let running = Task::test("r").bound("n1", "0-1", &[3]);
        assert_eq!(Holding::of(&running), Some(hold("r", "n1", &[0, 1], &[3])));
        let mut done = Task::test("d").bound("n1", "0", &[]);
        done.status.phase = TaskPhase::Succeeded;
        assert_eq!(Holding::of(&done), None);
        assert_eq!(Holding::of(&Task::test("p")), None);
    }

    #[test]
    fn rss_and_fd_verdicts() {
        assert!(check_rss("server", 100_000, 119_000, 20.0).is_ok());
        let err = check_rss("server", 100_000, 121_000, 20.0).unwrap_err();
        assert!(
            err.contains("21.0 %") && err.contains("limit 20 %"),
            "{err}"
        );
        assert!(check_fds("server", 40, 48).is_ok());
        assert!(
            check_fds("server", 40, 49)
                .unwrap_err()
                .contains("tolerance 8")
        );
        assert!(check_fds("agent", 200, 220).is_ok());
    }

    #[test]
    fn lost_ids_are_those_missing() {
        let present = BTreeMap::from([("a".to_string(), "Succeeded".to_string())]);
        let acked = vec!["a".to_string(), "b".to_string()];
        assert_eq!(lost_tasks(&acked, &present), ["b"]);
    }
}
