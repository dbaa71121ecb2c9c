//! [`Caller`]: who sent a request, as the authentication middleware found, and the one
//! place handlers ask whether it may do something. Decisions come from
//! `kohakuriver_api::auth`; this only turns a refusal into a 403 `Status`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use kohakuriver_api::auth::{
    Identity, Policy, Role, StatusRefusal, Target, Verb, authorize, check_spec, check_task_status,
    list_scope,
};
use kohakuriver_api::{FieldError, Node, Task, TaskSpec};

use crate::error::AppError;

/// The identity of a request, and whether its permissions are checked (they are not under
/// `--insecure-no-auth`, where everyone is an admin named `anonymous`).
#[derive(Clone, Debug)]
pub struct Caller {
    identity: Identity,
    checked: bool,
    token_id: Option<String>,
}

impl Caller {
    /// A caller whose permissions are checked.
    pub fn checked(identity: Identity, token_id: String) -> Caller {
        Caller {
            identity,
            checked: true,
            token_id: Some(token_id),
        }
    }

    /// Anyone, on a server without authentication.
    pub fn unchecked() -> Caller {
        Caller {
            identity: Identity::new("anonymous", Role::Admin),
            checked: false,
            token_id: None,
        }
    }

    /// Who it is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The id of the token the request came with.
    pub fn token_id(&self) -> Option<&str> {
        self.token_id.as_deref()
    }

    /// True when the server checks permissions.
    pub fn is_checked(&self) -> bool {
        self.checked
    }

    /// The name stamped as a new task's owner (none without authentication).
    pub fn owner(&self) -> Option<String> {
        self.checked.then(|| self.identity.name.clone())
    }

    /// 403 unless the caller may do `verb` on `target`.
    pub fn allow(&self, verb: Verb, target: &Target<'_>, policy: &Policy) -> Result<(), AppError> {
        if !self.checked {
            return Ok(());
        }
        authorize(&self.identity, verb, target, policy).map_err(|d| AppError::forbidden(d.0))
    }

    /// 403 when the spec asks for what the caller may not have (privileged, host mounts).
    pub fn allow_spec(
        &self,
        spec: &TaskSpec,
        old: Option<&TaskSpec>,
        policy: &Policy,
    ) -> Result<(), AppError> {
        if !self.checked {
            return Ok(());
        }
        check_spec(&self.identity, spec, old, policy).map_err(|d| AppError::forbidden(d.0))
    }

    /// 403, 409 or 422 unless the caller may write `new`'s status over `current`'s.
    pub fn allow_task_status(
        &self,
        current: &Task,
        new: &Task,
        node: Option<&Node>,
    ) -> Result<(), AppError> {
        if !self.checked {
            return Ok(());
        }
        match check_task_status(&self.identity, current, new, node) {
            Ok(()) => Ok(()),
            Err(StatusRefusal::Forbidden(m)) => Err(AppError::forbidden(m)),
            Err(StatusRefusal::Stale(m)) => Err(AppError::stale("Task", &current.metadata.name, m)),
            Err(StatusRefusal::Invalid { field, message }) => Err(AppError::invalid(
                "Task",
                &current.metadata.name,
                vec![FieldError::new(field, message)],
            )),
        }
    }

    /// The owner the caller's task lists and watches are limited to, if any.
    pub fn list_owner(&self, policy: &Policy) -> Option<String> {
        if !self.checked {
            return None;
        }
        list_scope(&self.identity, policy).map(str::to_string)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, AppError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| AppError::unauthorized("the request was not authenticated"))
    }
}
