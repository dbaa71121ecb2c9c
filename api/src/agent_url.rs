//! The agent endpoint's URLs, written once for both ends: the agent's router mounts the
//! routes named here, and the server's log proxy builds its calls with [`AgentUrl`], so the
//! two cannot drift apart.

use crate::auth::check_agent_address;

/// A node agent's base URL, `http(s)://HOST:PORT` as the node reported it, checked so the
/// server's calls to it cannot be steered to another path or host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentUrl {
    base: String,
}

impl AgentUrl {
    /// The route of a task's captured output (`axum` path syntax).
    pub const TASK_LOG_ROUTE: &'static str = "/v1/tasks/{name}/log";
    /// The route that answers `ok` to anyone, with no credential.
    pub const HEALTHZ_ROUTE: &'static str = "/healthz";

    /// The agent at `address`, or why the server will not call it
    /// (`auth::check_agent_address`).
    pub fn parse(address: &str) -> Result<AgentUrl, String> {
        check_agent_address(address)?;
        Ok(AgentUrl {
            base: address.trim_end_matches('/').to_string(),
        })
    }

    /// The URL of task `name`'s captured output on this agent. Task names are DNS labels
    /// (validated on create), so they need no escaping.
    pub fn task_log(&self, name: &str) -> String {
        format!(
            "{}{}",
            self.base,
            Self::TASK_LOG_ROUTE.replace("{name}", name)
        )
    }
}

impl std::fmt::Display for AgentUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            (
                "http://10.0.0.5:8081",
                Ok("http://10.0.0.5:8081/v1/tasks/t1/log"),
            ),
            (
                "https://gpu-01:8081/",
                Ok("https://gpu-01:8081/v1/tasks/t1/log"),
            ),
            (
                "http://h:1/evil",
                Err("\"http://h:1/evil\": expected http://HOST:PORT"),
            ),
            ("ftp://h:1", Err("\"ftp://h:1\": expected http://HOST:PORT")),
            ("http://user@h:1", Err("\"http://user@h:1\": expected")),
        ];
        for (address, want) in cases {
            let got = AgentUrl::parse(address).map(|u| u.task_log("t1"));
            match (got, want) {
                (Ok(url), Ok(want)) => assert_eq!(url, *want, "{address}"),
                (Err(e), Err(start)) => assert!(e.starts_with(start), "{address}: {e}"),
                (got, want) => panic!("{address}: got {got:?}, want {want:?}"),
            }
        }
        let url = AgentUrl::parse("http://h:1/").unwrap();
        assert_eq!(url.to_string(), "http://h:1");
    }
}
