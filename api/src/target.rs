//! The `-t` target grammar: `hostname[:numa][::gpu,gpu]`.
//!
//! Examples: `mynode`, `mynode:1` (NUMA node 1), `mynode::0,1` (GPUs 0 and 1),
//! `mynode:0::0,1` (NUMA node 0, GPUs 0 and 1).

use crate::task::Placement;

/// A parsed target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The node's name (host names are case-insensitive, so it is lowercased).
    pub node: String,
    /// The NUMA node, when given.
    pub numa: Option<u32>,
    /// Exact GPU indices, when given.
    pub gpu_ids: Option<Vec<u32>>,
}

const GRAMMAR: &str =
    "expected hostname[:numa][::gpu,gpu], e.g. mynode, mynode::0,1 or mynode:0::0,1";

impl Target {
    /// Parses a target, naming the bad part in the error.
    pub fn parse(text: &str) -> Result<Target, String> {
        let (host_part, gpu_part) = match text.split_once("::") {
            Some((h, g)) => (h, Some(g)),
            None => (text, None),
        };
        let (host, numa_part) = match host_part.split_once(':') {
            Some((h, n)) => (h, Some(n)),
            None => (host_part, None),
        };
        if host.is_empty() {
            return Err(format!(
                "invalid target {text:?}: empty hostname; {GRAMMAR}"
            ));
        }
        let numa = match numa_part {
            None => None,
            Some(n) => Some(n.parse::<u32>().map_err(|_| {
                format!("invalid target {text:?}: NUMA node {n:?} is not a non-negative number; {GRAMMAR}")
            })?),
        };
        let gpu_ids = match gpu_part {
            None => None,
            Some(g) => {
                if g.is_empty() {
                    return Err(format!(
                        "invalid target {text:?}: no GPU ids after \"::\"; {GRAMMAR}"
                    ));
                }
                let mut ids = Vec::new();
                for id in g.split(',') {
                    let id = id.trim();
                    let parsed = id.parse::<u32>().map_err(|_| {
                        format!("invalid target {text:?}: GPU id {id:?} is not a non-negative number; {GRAMMAR}")
                    })?;
                    if ids.contains(&parsed) {
                        return Err(format!(
                            "invalid target {text:?}: GPU id {parsed} is listed twice"
                        ));
                    }
                    ids.push(parsed);
                }
                Some(ids)
            }
        };
        Ok(Target {
            node: host.to_ascii_lowercase(),
            numa,
            gpu_ids,
        })
    }

    /// The placement this target means.
    pub fn to_placement(&self) -> Placement {
        Placement {
            node: Some(self.node.clone()),
            numa: self.numa,
            gpu_ids: self.gpu_ids.clone(),
            node_selector: Default::default(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.node)?;
        if let Some(n) = self.numa {
            write!(f, ":{n}")?;
        }
        if let Some(ids) = &self.gpu_ids {
            let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
            write!(f, "::{}", ids.join(","))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str, node: &str, numa: Option<u32>, gpus: Option<&[u32]>) {
        let t = Target::parse(text).unwrap();
        assert_eq!(t.node, node, "{text}");
        assert_eq!(t.numa, numa, "{text}");
        assert_eq!(t.gpu_ids.as_deref(), gpus, "{text}");
    }

    fn err(text: &str, contains: &str) {
        let e = Target::parse(text).unwrap_err();
        assert!(e.contains(contains), "{text}: {e}");
    }

    #[test]
    fn seed_examples() {
        ok("mynode", "mynode", None, None);
        ok("mynode::0,1", "mynode", None, Some(&[0, 1]));
        ok("mynode:0::0,1", "mynode", Some(0), Some(&[0, 1]));
        ok("mynode:1", "mynode", Some(1), None);
        ok("MyNode", "mynode", None, None);
        ok("gpu-01.lab:1::3", "gpu-01.lab", Some(1), Some(&[3]));
    }

    #[test]
    fn bad_targets() {
        err("host:x", "NUMA node \"x\" is not a non-negative number");
        err("host:-1", "NUMA node \"-1\"");
        err(":0", "empty hostname");
        err("host::", "no GPU ids");
        err("host::a", "GPU id \"a\"");
        err("host::0,0", "listed twice");
        err("host::0,,1", "GPU id \"\"");
    }

    #[test]
    fn display_round_trips() {
        for t in ["mynode", "mynode:0", "mynode::0,1", "mynode:1::2"] {
            assert_eq!(Target::parse(t).unwrap().to_string(), t);
        }
    }
}
