//! Authentication: tokens, their hashes, and the identity of each request.
//!
//! Tokens are `krv_<id>_<secret>`. The store keeps the id, the identity and the SHA-256 of
//! the secret; [`Authenticator`] keeps the same in memory (loaded at start, changed by the
//! token endpoints), so checking a request costs a hash and a map lookup, never a database
//! read. Revoking removes the token from both at once: the very next request with it is
//! refused. The secret is compared in constant time.
//!
//! [`authenticate`] is the middleware that turns the `Authorization: Bearer` header into a
//! [`Caller`], which handlers ask for permission through [`Caller::allow`].

mod caller;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

use kohakuriver_api::Timestamp;
use kohakuriver_api::auth::{
    Identity, Role, TOKEN_ID_LEN, TOKEN_PREFIX, TOKEN_SECRET_LEN, TokenInfo, parse_token,
};

use crate::error::AppError;
use crate::state::AppState;
use crate::store::{Store, TokenRecord};

pub use caller::Caller;

/// Paths answered without a credential: liveness, the CA a node checks before it trusts
/// the server, and the server's version (public in Kubernetes too; kubectl's version
/// dispatchers ask it before they have a credential).
const OPEN_PATHS: &[&str] = &["/healthz", "/cacerts", "/version"];

/// A new random token `krv_<id>_<secret>`: an 8-character public id and a 32-character
/// base62 secret (about 190 bits).
pub fn generate_token() -> String {
    let mut rng = rand::rng();
    let id: String = (0..TOKEN_ID_LEN)
        .map(|_| {
            let n = rng.random_range(0..36u8);
            char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
        })
        .collect();
    let secret: String = (&mut rng)
        .sample_iter(Alphanumeric)
        .take(TOKEN_SECRET_LEN)
        .map(char::from)
        .collect();
    format!("{TOKEN_PREFIX}{id}_{secret}")
}

/// SHA-256 of a token's secret part.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Equality that takes the same time wherever the inputs differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token held in memory: its record, and when it was last used (seconds since the epoch,
/// 0 for never), updated without a lock.
struct Held {
    record: TokenRecord,
    last_used: AtomicI64,
    /// Static tokens live only in this process and are never written to the store.
    is_static: bool,
}

impl Held {
    /// The same token with a changed record, keeping its last use.
    fn with_record(&self, record: TokenRecord) -> Arc<Held> {
        Arc::new(Held {
            record,
            last_used: AtomicI64::new(self.last_used.load(Ordering::Relaxed)),
            is_static: self.is_static,
        })
    }
}

/// The tokens this server accepts, by id.
#[derive(Clone, Default)]
pub struct Authenticator {
    tokens: Arc<RwLock<HashMap<String, Arc<Held>>>>,
}

/// Why a credential was refused (said to the client as a 401, logged with the address).
fn refused(why: &str) -> AppError {
    AppError::unauthorized(format!(
        "{why}; send a valid token as `Authorization: Bearer krv_…` (kohakuriver login --server URL --token-file FILE, or --token)"
    ))
}

impl Authenticator {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Held>>> {
        self.tokens.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Held>>> {
        self.tokens.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or replaces) a token.
    pub fn insert(&self, record: TokenRecord, is_static: bool) {
        let last = record.info.last_used_at.map_or(0, |t| t.timestamp());
        let held = Arc::new(Held {
            record,
            last_used: AtomicI64::new(last),
            is_static,
        });
        self.write().insert(held.record.info.id.clone(), held);
    }

    /// Removes a token; it is refused from the next request on.
    pub fn remove(&self, id: &str) {
        self.write().remove(id);
    }

    /// The identity a bearer token stands for at `now`, and the token's id.
    pub fn identify(&self, token: &str, now: Timestamp) -> Result<(Identity, String), AppError> {
        let Some(parts) = parse_token(token) else {
            return Err(refused("the credential is not a KohakuRiver token"));
        };
        let held = self.read().get(parts.id).cloned();
        let Some(held) = held else {
            return Err(refused(&format!(
                "token {} is unknown or revoked",
                parts.id
            )));
        };
        if !same(&hash_secret(parts.secret), &held.record.hash) {
            return Err(refused(&format!(
                "token {} is unknown or revoked",
                parts.id
            )));
        }
        let info = &held.record.info;
        if info.expires_at.is_some_and(|at| at <= now) {
            return Err(refused(&format!(
                "token {} ({}) has expired",
                info.id, info.name
            )));
        }
        held.last_used.store(now.timestamp(), Ordering::Relaxed);
        Ok((Identity::new(info.name.clone(), info.role), info.id.clone()))
    }

    /// Uses up one use of a join token, atomically; the updated record (to store), or
    /// `None` when none is left.
    pub fn take_use(&self, id: &str) -> Option<TokenRecord> {
        let mut tokens = self.write();
        let held = tokens.get_mut(id)?;
        let left = held.record.info.uses_left.unwrap_or(0);
        if left == 0 {
            return None;
        }
        let mut record = held.record.clone();
        record.info.uses_left = Some(left - 1);
        *held = held.with_record(record.clone());
        Some(record)
    }

    /// Every stored (not static) token with its last use, newest first.
    pub fn list(&self) -> Vec<TokenInfo> {
        let mut items: Vec<TokenInfo> = self
            .read()
            .values()
            .filter(|h| !h.is_static)
            .map(|h| with_last_use(h))
            .collect();
        items.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        items
    }

    /// The stored token with this id, or the one named so.
    pub fn find(&self, id_or_name: &str) -> Result<TokenRecord, AppError> {
        let tokens = self.read();
        if let Some(h) = tokens.get(id_or_name).filter(|h| !h.is_static) {
            return Ok(h.record.clone());
        }
        let named: Vec<&Arc<Held>> = tokens
            .values()
            .filter(|h| !h.is_static && h.record.info.name == id_or_name)
            .collect();
        match named.as_slice() {
            [one] => Ok(one.record.clone()),
            [] => Err(AppError::not_found("Token", id_or_name)),
            many => {
                let ids: Vec<&str> = many.iter().map(|h| h.record.info.id.as_str()).collect();
                Err(AppError::new(
                    kohakuriver_api::StatusReason::Conflict,
                    format!(
                        "{} tokens are named {id_or_name:?} ({}); revoke one by its id",
                        many.len(),
                        ids.join(", ")
                    ),
                ))
            }
        }
    }

    /// True when a stored admin token exists.
    pub fn has_admin(&self) -> bool {
        self.read()
            .values()
            .any(|h| !h.is_static && h.record.info.role == Role::Admin)
    }

    /// The last uses not yet written to the store.
    pub fn unsaved_uses(&self) -> Vec<(String, Timestamp)> {
        self.read()
            .values()
            .filter(|h| !h.is_static)
            .filter_map(|h| {
                let used = h.last_used.load(Ordering::Relaxed);
                let saved = h.record.info.last_used_at.map_or(0, |t| t.timestamp());
                (used > saved)
                    .then(|| chrono::DateTime::from_timestamp(used, 0))
                    .flatten()
                    .map(|t| (h.record.info.id.clone(), t))
            })
            .collect()
    }

    /// Marks last uses as saved.
    pub fn saved_uses(&self, saved: &[(String, Timestamp)]) {
        let mut tokens = self.write();
        for (id, at) in saved {
            if let Some(held) = tokens.get_mut(id) {
                let mut record = held.record.clone();
                record.info.last_used_at = Some(*at);
                *held = held.with_record(record);
            }
        }
    }
}

fn with_last_use(h: &Held) -> TokenInfo {
    let mut info = h.record.info.clone();
    let used = h.last_used.load(Ordering::Relaxed);
    if used > 0 {
        info.last_used_at = chrono::DateTime::from_timestamp(used, 0);
    }
    info
}

/// A new token for `identity` and its record (valid until `expires_at`).
pub fn mint(
    identity: &Identity,
    now: Timestamp,
    expires_at: Option<Timestamp>,
    uses_left: Option<u32>,
) -> (String, TokenRecord) {
    let token = generate_token();
    let parts = parse_token(&token).expect("a generated token parses");
    let record = TokenRecord {
        info: TokenInfo {
            id: parts.id.to_string(),
            name: identity.name.clone(),
            role: identity.role,
            created_at: now,
            expires_at,
            last_used_at: None,
            uses_left,
        },
        hash: hash_secret(parts.secret),
    };
    (token, record)
}

/// The record of a token made outside the store (`AuthConfig::static_tokens`).
pub fn static_record(token: &str, identity: &Identity, now: Timestamp) -> Option<TokenRecord> {
    let parts = parse_token(token)?;
    Some(TokenRecord {
        info: TokenInfo {
            id: parts.id.to_string(),
            name: identity.name.clone(),
            role: identity.role,
            created_at: now,
            expires_at: None,
            last_used_at: None,
            uses_left: None,
        },
        hash: hash_secret(parts.secret),
    })
}

/// Loads the stored tokens, adds the static ones, and on first start (auth on, no admin
/// token stored) makes an admin token and writes it to `admin_token_file` (mode 0600). With
/// `admin_token_if_missing` (a start from a backup) it does so too when the file is missing.
pub fn bootstrap(store: &Store, config: &crate::AuthConfig) -> Result<Authenticator, crate::Error> {
    let auth = Authenticator::default();
    let now = chrono::Utc::now();
    for record in store.load_tokens().map_err(crate::Error::from)? {
        auth.insert(record, false);
    }
    for (token, identity) in &config.static_tokens {
        let record = static_record(token, identity, now).ok_or_else(|| {
            crate::Error::Config(format!(
                "the static token for {identity} is not a KohakuRiver token (krv_<id>_<secret>)"
            ))
        })?;
        auth.insert(record, true);
    }
    let wanted =
        |path: &Path| !auth.has_admin() || (config.admin_token_if_missing && !path.exists());
    if config.enabled
        && let Some(path) = config.admin_token_file.as_deref().filter(|p| wanted(p))
    {
        let (token, record) = mint(&Identity::new("admin", Role::Admin), now, None, None);
        write_secret_file(path, &format!("{token}\n")).map_err(|e| {
            crate::Error::Config(format!(
                "cannot write the first admin token to {}: {e}",
                path.display()
            ))
        })?;
        store.put_token(&record).map_err(crate::Error::from)?;
        auth.insert(record, false);
        tracing::info!(path = %path.display(), "made an admin token");
    } else if config.enabled && !auth.has_admin() {
        tracing::warn!("no admin token exists and no file was given to write one to");
    }
    Ok(auth)
}

/// Writes `text` to `path` readable by its owner only (mode 0600), replacing any file
/// there in one step (a temporary file renamed over it); a missing directory is made.
/// Used for the admin token here and for the CLI's config.
pub fn write_secret_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The secret the server presents to node `node`'s agent: HMAC-SHA256 of the node name
/// under the server's agent key, so it needs no storage and differs per node.
pub fn agent_secret(key: &[u8], node: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"kohakuriver-agent:");
    mac.update(node.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random key for [`agent_secret`].
pub fn new_key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    rand::rng().fill(&mut key[..]);
    key
}

/// The middleware: every request but the open paths carries a valid bearer token, or gets
/// a 401 `Status`. Refusals are logged with the client's address, never with the token.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if OPEN_PATHS.contains(&path) {
        return next.run(request).await;
    }
    let caller = if !state.config().auth.enabled {
        Caller::unchecked()
    } else {
        let bearer = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let identified = match bearer {
            None => Err(refused("no credential")),
            Some(token) => state.authenticator().identify(token, chrono::Utc::now()),
        };
        match identified {
            Ok((identity, id)) => {
                if let Err(e) = state.rate().check(&identity) {
                    return e.into_response();
                }
                Caller::checked(identity, id)
            }
            Err(e) => {
                let from = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
                tracing::warn!(%from, method = %request.method(), path, reason = %e.0.message, "refused a request: authentication failed");
                return e.into_response();
            }
        }
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_identify_until_revoked_or_expired() {
        let auth = Authenticator::default();
        let now = chrono::Utc::now();
        let alice = Identity::new("alice", Role::User);
        let (token, record) = mint(&alice, now, Some(now + chrono::Duration::hours(1)), None);
        let id = record.info.id.clone();
        auth.insert(record, false);
        assert_eq!(auth.identify(&token, now).unwrap(), (alice, id.clone()));
        assert!(auth.unsaved_uses().iter().any(|(i, _)| *i == id));
        // A wrong secret with the right id.
        let forged = format!(
            "{}{}",
            &token[..token.len() - 1],
            if token.ends_with('a') { 'b' } else { 'a' }
        );
        assert_eq!(auth.identify(&forged, now).unwrap_err().0.code, 401);
        // Expired.
        let later = now + chrono::Duration::hours(2);
        let e = auth.identify(&token, later).unwrap_err();
        assert!(e.0.message.contains("expired"), "{e}");
        // Revoked.
        auth.remove(&id);
        assert!(
            auth.identify(&token, now)
                .unwrap_err()
                .0
                .message
                .contains("revoked")
        );
        assert!(auth.identify("Basic x", now).is_err());
    }

    #[test]
    fn agent_secrets_differ_per_node_and_key() {
        let k1 = new_key();
        let k2 = new_key();
        assert_eq!(agent_secret(&k1, "a"), agent_secret(&k1, "a"));
        assert_ne!(agent_secret(&k1, "a"), agent_secret(&k1, "b"));
        assert_ne!(agent_secret(&k1, "a"), agent_secret(&k2, "a"));
        assert_eq!(agent_secret(&k1, "a").len(), 64);
    }

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = generate_token();
        let b = generate_token();
        assert!(parse_token(&a).is_some(), "{a}");
        assert_ne!(a, b);
    }
}
