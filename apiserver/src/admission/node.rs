//! How the server admits `Node`s: validation, and a node's status bounded for every writer
//! before anything reads it, with only the node's own agent setting the address the server
//! will call.

use kohakuriver_api::auth::{Role, Target, validate_node_status};
use kohakuriver_api::validation::validate_node;
use kohakuriver_api::{FieldError, Node, Resource, Timestamp};

use super::{Served, Stored, schema_once, spec_and_status};
use crate::auth::Caller;
use crate::error::AppError;

impl Served for Node {
    spec_and_status!(kohakuriver_api::NodeSpec, kohakuriver_api::NodeStatus);
    fn validate(&self) -> Vec<FieldError> {
        validate_node(self)
    }
    fn schema() -> &'static serde_json::Value {
        static SCHEMA: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
        schema_once(&SCHEMA, kohakuriver_api::schema::node_schema_json)
    }
    fn target(&self) -> Target<'_> {
        Target::Node(&self.metadata.name)
    }
    fn collection(_node: Option<&str>) -> Target<'_> {
        Target::Nodes
    }
    fn missing(name: &str) -> Target<'_> {
        Target::Node(name)
    }
    /// What a body says of a node's status is bounded before anything else reads it.
    fn precheck_status(status: &serde_json::Value) -> Result<(), AppError> {
        let Ok(partial) = serde_json::from_value::<kohakuriver_api::NodeStatus>(status.clone())
        else {
            // Unreadable as a status: the full check after merging answers with the field.
            return Ok(());
        };
        let errors = validate_node_status(&partial);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(AppError::invalid(Node::KIND, "", errors))
        }
    }
    /// A node's status is bounded for every writer, and only the node itself sets the
    /// address the server will call.
    fn admit_status_by(
        &self,
        caller: &Caller,
        current: &Self,
        _stored: &dyn Stored,
    ) -> Result<(), AppError> {
        let errors = validate_node_status(&self.status);
        if !errors.is_empty() {
            return Err(AppError::invalid(Node::KIND, self.name(), errors));
        }
        let me = caller.identity();
        let is_self = me.role == Role::Node && me.name == self.metadata.name;
        if caller.is_checked() && self.status.address != current.status.address && !is_self {
            return Err(AppError::forbidden(format!(
                "{} {:?} may not set the address of node {}: only the node's own agent does",
                me.role, me.name, self.metadata.name
            )));
        }
        Ok(())
    }
    fn start_status(&mut self, _now: Timestamp) {
        self.status = Default::default();
    }
    fn admit_status_change(&mut self, _old: &Self) {}
    fn frozen_changes(&self, _old: &Self) -> Vec<FieldError> {
        Vec::new()
    }
    fn index_columns(&self) -> (String, String) {
        (String::new(), String::new())
    }
}
