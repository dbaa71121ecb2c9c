//! What the server tells clients and agents about itself.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `GET /apis/kohakuriver/v1/info`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    /// The server's version.
    pub version: String,
    /// The image used for tasks that name neither `image` nor `container`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_image: Option<String>,
    /// Host paths a `user` may mount (the server's `--user-mount-prefixes`). Agents check the
    /// real path (symlinks resolved) of a mount under one of these against them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_mount_prefixes: Vec<String>,
    /// False when the server runs with `--insecure-no-auth`.
    #[serde(default)]
    pub auth: bool,
    /// The controllers' `--node-grace` in seconds (fractions allowed): how long a node may be
    /// silent before its tasks are re-queued or marked unreachable. An agent checks at start
    /// that its `--fence-after` plus `--kill-grace` is below it. Absent when this server runs
    /// no controllers (`--no-controllers`) and so does not know it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_grace_seconds: Option<f64>,
}

impl ServerInfo {
    /// The node grace, when the server knows it.
    pub fn node_grace(&self) -> Option<std::time::Duration> {
        self.node_grace_seconds
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(std::time::Duration::from_secs_f64)
    }
}
