//! Host mounts checked again on the node, where the file system is.
//!
//! The API server admits a user's mount by its literal path (under `--user-mount-prefixes`);
//! only the agent can see where that path really leads. [`check_mount`] decides from the
//! mount, its real path (symlinks and `..` resolved by the shell with
//! `std::fs::canonicalize`), the server's user prefixes and the agent's own `--allow-mounts`
//! whether the mount may be used:
//!
//! - with `--allow-mounts`, every mount's real path must be under one of those prefixes;
//! - without it, the server's decision stands, except that a mount whose literal path is
//!   under a user prefix must also have its real path under one (a symlink inside an
//!   allowed directory cannot lead out of it).
//!
//! Prefixes are compared in both forms, as written and resolved, so a prefix that is itself
//! a symlink (`/data` → `/mnt/data`) still admits what lies below it. A mount that passes is
//! handed to Docker by its real path, so the path checked is the path mounted.

use std::path::{Path, PathBuf};

use kohakuriver_api::auth::{mount_host_path, normalize_path, path_within};

/// One allowed prefix, as written and as resolved on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// As configured (normalised lexically).
    pub literal: String,
    /// Its real path; the literal one when it cannot be resolved (it does not exist).
    pub real: PathBuf,
}

impl Prefix {
    /// Resolves `path` on this machine (IO: `canonicalize`).
    pub fn resolve(path: &str) -> Prefix {
        let literal = normalize_path(path);
        let real = std::fs::canonicalize(&literal).unwrap_or_else(|_| PathBuf::from(&literal));
        Prefix { literal, real }
    }

    /// A prefix whose real path is `real` (for tests and already resolved paths).
    pub fn new(literal: &str, real: impl Into<PathBuf>) -> Prefix {
        Prefix {
            literal: normalize_path(literal),
            real: real.into(),
        }
    }

    fn holds_real(&self, real: &Path) -> bool {
        real.starts_with(&self.real)
    }
}

/// The rules one agent applies to every mount.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountPolicy {
    /// The server's `--user-mount-prefixes` (from `GET /info`).
    pub server_prefixes: Vec<Prefix>,
    /// The agent's `--allow-mounts`; None when not given.
    pub allow: Option<Vec<Prefix>>,
}

impl MountPolicy {
    /// Resolves both lists on this machine.
    pub fn resolve(server_prefixes: &[String], allow: Option<&[PathBuf]>) -> MountPolicy {
        MountPolicy {
            server_prefixes: server_prefixes.iter().map(|p| Prefix::resolve(p)).collect(),
            allow: allow.map(|list| {
                list.iter()
                    .map(|p| Prefix::resolve(&p.to_string_lossy()))
                    .collect()
            }),
        }
    }
}

fn list(prefixes: &[Prefix]) -> String {
    prefixes
        .iter()
        .map(|p| p.literal.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decides whether `mount` (`HOST:CONTAINER[:mode]`) may be used; `real` is its host path's
/// real path, None when it cannot be resolved (it does not exist). The refusal names the
/// mount, its real path and the rule.
pub fn check_mount(mount: &str, real: Option<&Path>, policy: &MountPolicy) -> Result<(), String> {
    let host = mount_host_path(mount);
    let shown = real.map_or_else(
        || "(cannot be resolved: does it exist?)".to_string(),
        |r| r.display().to_string(),
    );
    if let Some(allow) = &policy.allow {
        if real.is_some_and(|r| allow.iter().any(|p| p.holds_real(r))) {
            return Ok(());
        }
        return Err(format!(
            "mount {mount:?} is not allowed on this node: its real path {shown} is not under the agent's --allow-mounts ({}); mount a path under them or ask the node's administrator",
            list(allow)
        ));
    }
    let Some(prefix) = policy
        .server_prefixes
        .iter()
        .find(|p| path_within(host, &p.literal))
    else {
        // Not a user's mount by the server's rule: the server admitted it for an operator.
        return Ok(());
    };
    if real.is_some_and(|r| policy.server_prefixes.iter().any(|p| p.holds_real(r))) {
        return Ok(());
    }
    Err(format!(
        "mount {mount:?} is not allowed on this node: {host} is under the server's user mount prefix {} but its real path {shown} is outside every user mount prefix ({}); a symlink may not lead out of an allowed directory",
        prefix.literal,
        list(&policy.server_prefixes)
    ))
}

/// The mount with its host path replaced by `real`, so Docker mounts what was checked.
pub fn with_real_path(mount: &str, real: &Path) -> String {
    let host = mount_host_path(mount);
    format!("{}{}", real.display(), &mount[host.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(server: &[(&str, &str)], allow: Option<&[(&str, &str)]>) -> MountPolicy {
        let prefixes =
            |l: &[(&str, &str)]| l.iter().map(|(lit, real)| Prefix::new(lit, real)).collect();
        MountPolicy {
            server_prefixes: prefixes(server),
            allow: allow.map(prefixes),
        }
    }

    /// One case: `mount` whose host path really is `real` ("" = unresolvable) under
    /// `policy`, allowed or refused.
    fn check(mount: &str, real: &str, policy: &MountPolicy) -> &'static str {
        let real = (!real.is_empty()).then(|| PathBuf::from(real));
        match check_mount(mount, real.as_deref(), policy) {
            Ok(()) => "allowed",
            Err(_) => "refused",
        }
    }

    #[test]
    fn without_allow_list_the_server_decides_but_symlinks_stay_inside() {
        let p = policy(&[("/data", "/data"), ("/scratch/", "/mnt/scratch")], None);
        assert_eq!(check("/data/a:/a", "/data/a", &p), "allowed");
        assert_eq!(check("/data/link:/a", "/", &p), "refused");
        assert_eq!(check("/data/link:/a", "/etc", &p), "refused");
        assert_eq!(check("/data/../etc:/a", "/etc", &p), "allowed"); // not a user path: the server's call
        assert_eq!(check("/data/up:/a:ro", "/mnt/scratch/x", &p), "allowed"); // into another prefix
        assert_eq!(check("/scratch/x:/x", "/mnt/scratch/x", &p), "allowed"); // prefix is a symlink
        assert_eq!(check("/data/missing:/m", "", &p), "refused");
        assert_eq!(check("/etc:/etc", "/etc", &p), "allowed"); // an operator's mount
        assert_eq!(check("/database:/d", "/", &p), "allowed"); // /database is not under /data
        let none = policy(&[], None);
        assert_eq!(check("/anything:/a", "/", &none), "allowed");
    }

    #[test]
    fn with_allow_list_every_real_path_must_be_inside() {
        let p = policy(&[("/data", "/data")], Some(&[("/srv/ok", "/srv/ok")]));
        assert_eq!(check("/srv/ok/x:/x", "/srv/ok/x", &p), "allowed");
        assert_eq!(check("/srv/ok:/x", "/srv/ok", &p), "allowed");
        assert_eq!(check("/srv/ok/link:/x", "/", &p), "refused");
        assert_eq!(check("/data/a:/a", "/data/a", &p), "refused"); // the agent's list wins
        assert_eq!(check("/etc:/etc", "/etc", &p), "refused"); // operators too
        assert_eq!(check("/srv/okay:/x", "/srv/okay", &p), "refused");
        assert_eq!(check("/srv/ok/missing:/x", "", &p), "refused");
        let empty = policy(&[], Some(&[]));
        assert_eq!(check("/srv/ok:/x", "/srv/ok", &empty), "refused");
    }

    #[test]
    fn refusals_name_the_mount_the_real_path_and_the_rule() {
        let p = policy(&[("/data", "/data")], None);
        let err = check_mount("/data/link:/a", Some(Path::new("/")), &p).unwrap_err();
        assert!(err.contains("\"/data/link:/a\""), "{err}");
        assert!(err.contains("real path / "), "{err}");
        assert!(err.contains("user mount prefix /data"), "{err}");
        let p = policy(&[], Some(&[("/srv", "/srv")]));
        let err = check_mount("/etc:/etc", Some(Path::new("/etc")), &p).unwrap_err();
        assert!(err.contains("--allow-mounts (/srv)"), "{err}");
        assert!(err.contains("real path /etc"), "{err}");
        let err = check_mount("/nope:/n", None, &p).unwrap_err();
        assert!(err.contains("cannot be resolved"), "{err}");
    }

    #[test]
    fn real_path_replaces_the_host_path_only() {
        assert_eq!(
            with_real_path("/data/link:/a:ro", Path::new("/mnt/x")),
            "/mnt/x:/a:ro"
        );
        assert_eq!(with_real_path("/d:/d", Path::new("/d")), "/d:/d");
    }

    #[test]
    fn resolve_follows_symlinked_prefixes() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let p = Prefix::resolve(&link.to_string_lossy());
        assert_eq!(p.real, std::fs::canonicalize(&real).unwrap());
        let missing = Prefix::resolve("/no/such/dir/..//x");
        assert_eq!(missing.literal, "/no/such/x");
        assert_eq!(missing.real, PathBuf::from("/no/such/x"));
    }
}
