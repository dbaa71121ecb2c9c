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
}
