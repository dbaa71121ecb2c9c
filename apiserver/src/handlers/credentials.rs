//! The credential endpoints: `whoami`, tokens (admin), joining a node (join credentials),
//! and a node's agent credentials (that node only).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kohakuriver_api::auth::{
    CreatedToken, Identity, JoinRequest, NodeCredentials, Role, Target, TokenInfo, TokenList,
    TokenRequest, Verb, WhoAmI,
};
use kohakuriver_api::validation::check_dns_subdomain;
use kohakuriver_api::{FieldError, StatusReason};

use crate::auth::{Caller, mint};
use crate::body::{Payload, typed};
use crate::error::AppError;
use crate::state::AppState;

/// Longest token lifetime accepted (ten years): anything longer is a mistake.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `GET /whoami`.
pub async fn whoami(caller: Caller) -> Json<WhoAmI> {
    let id = caller.identity();
    Json(WhoAmI {
        name: id.name.clone(),
        role: id.role,
        may: id.role.abilities().iter().map(|s| s.to_string()).collect(),
        authenticated: caller.is_checked(),
    })
}

fn invalid(field: &str, message: impl Into<String>) -> AppError {
    AppError::invalid("Token", "", vec![FieldError::new(field, message)])
}

/// Checks a token request: a usable name (a DNS name for a node), a sane lifetime, and a
/// use count only for join tokens.
fn check_request(request: &TokenRequest) -> Result<(), AppError> {
    let name = &request.name;
    if name.is_empty()
        || name.len() > 253
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(invalid(
            "name",
            format!("{name:?} is not a token name: 1 to 253 characters, no spaces"),
        ));
    }
    if request.role == Role::Node
        && let Err(e) = check_dns_subdomain(name)
    {
        return Err(invalid(
            "name",
            format!("a node token is named after its node: {e}"),
        ));
    }
    if let Some(ttl) = request.ttl_seconds
        && (ttl == 0 || ttl > MAX_TTL.as_secs())
    {
        return Err(invalid(
            "ttlSeconds",
            format!("{ttl} is not a lifetime; give 1 second to 10 years, or none for no expiry"),
        ));
    }
    match (request.role, request.uses) {
        (Role::Join, Some(0)) => Err(invalid("uses", "a join token needs at least 1 use")),
        (Role::Join, _) | (_, None) => Ok(()),
        (role, Some(_)) => Err(invalid(
            "uses",
            format!("only join tokens have a use count, not {role} tokens"),
        )),
    }
}

/// `POST /tokens` (admin): 201 with the token, shown this once.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Payload(value): Payload,
) -> Result<(StatusCode, Json<CreatedToken>), AppError> {
    caller.allow(
        Verb::ManageTokens,
        &Target::Tokens,
        &state.config().auth.policy,
    )?;
    let request: TokenRequest = typed(&value)?;
    check_request(&request)?;
    let now = chrono::Utc::now();
    let expires_at = request
        .ttl_seconds
        .map(|s| now + chrono::Duration::seconds(s as i64));
    let uses = (request.role == Role::Join).then(|| request.uses.unwrap_or(1));
    let identity = Identity::new(request.name.clone(), request.role);
    let (token, record) = mint(&identity, now, expires_at, uses);
    tracing::info!(by = %caller.identity(), id = %record.info.id, name = %record.info.name, role = %record.info.role, "token created");
    issue(&state, token, record, Vec::new()).await
}

/// Stores `record` (and the `also` records, such as a join token with one use fewer), then
/// accepts its token and answers it, shown this once with the CA fingerprint.
async fn issue(
    state: &AppState,
    token: String,
    record: crate::store::TokenRecord,
    also: Vec<crate::store::TokenRecord>,
) -> Result<(StatusCode, Json<CreatedToken>), AppError> {
    let store = state.store().clone();
    let saved = record.clone();
    tokio::task::spawn_blocking(move || {
        for other in &also {
            store.put_token(other)?;
        }
        store.put_token(&saved)
    })
    .await
    .map_err(|e| AppError::internal(e.to_string()))??;
    let info = record.info.clone();
    state.authenticator().insert(record, false);
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            info,
            ca_fingerprint: state.config().ca_fingerprint.clone(),
        }),
    ))
}

/// `GET /tokens` (admin): every stored token, newest first, never a secret.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TokenList>, AppError> {
    caller.allow(
        Verb::ManageTokens,
        &Target::Tokens,
        &state.config().auth.policy,
    )?;
    Ok(Json(TokenList {
        items: state.authenticator().list(),
    }))
}

/// `DELETE /tokens/{id or name}` (admin): refused from the next request on.
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id_or_name): Path<String>,
) -> Result<Json<TokenInfo>, AppError> {
    caller.allow(
        Verb::ManageTokens,
        &Target::Tokens,
        &state.config().auth.policy,
    )?;
    let record = state.authenticator().find(&id_or_name)?;
    let id = record.info.id.clone();
    // Out of memory first: from here on the token is refused, even if the disk write fails.
    state.authenticator().remove(&id);
    let store = state.store().clone();
    tokio::task::spawn_blocking(move || store.delete_token(&id))
        .await
        .map_err(|e| AppError::internal(e.to_string()))??;
    tracing::info!(by = %caller.identity(), id = %record.info.id, name = %record.info.name, "token revoked");
    Ok(Json(record.info))
}

/// `POST /join` with a join credential: a node credential bound to the node named in the
/// body. Each join uses up one of the join token's uses.
pub async fn join(
    State(state): State<AppState>,
    caller: Caller,
    Payload(value): Payload,
) -> Result<(StatusCode, Json<CreatedToken>), AppError> {
    caller.allow(Verb::Join, &Target::Server, &state.config().auth.policy)?;
    if caller.identity().role != Role::Join {
        return Err(AppError::forbidden(format!(
            "{} may not join a node: only a join credential may (kohakuriver token create --role join)",
            caller.identity()
        )));
    }
    let request: JoinRequest = typed(&value)?;
    check_dns_subdomain(&request.node)
        .map_err(|e| AppError::invalid("Node", &request.node, vec![FieldError::new("node", e)]))?;
    let join_id = caller
        .token_id()
        .ok_or_else(|| AppError::forbidden("only a stored join token may join a node"))?
        .to_string();
    let join = state.authenticator().take_use(&join_id).ok_or_else(|| {
        AppError::new(
            StatusReason::Forbidden,
            format!("join token {join_id} is used up; make another with kohakuriver token create --role join"),
        )
    })?;
    let now = chrono::Utc::now();
    let (token, record) = mint(
        &Identity::new(request.node.clone(), Role::Node),
        now,
        None,
        None,
    );
    tracing::info!(join = %join_id, node = %request.node, "node joined");
    issue(&state, token, record, vec![join]).await
}

/// `GET /nodes/{name}/credentials` (that node's agent only).
pub async fn node_credentials(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<NodeCredentials>, AppError> {
    caller.allow(
        Verb::NodeCredentials,
        &Target::Node(&name),
        &state.config().auth.policy,
    )?;
    Ok(Json(NodeCredentials {
        agent_secret: state.agent_secret(&name),
    }))
}
