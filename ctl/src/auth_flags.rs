//! The authentication and admission flags of `server` and `up`, and the pure rules that
//! turn them into the API server's [`AuthConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kohakuriver_api::{Identity, Policy, Role};
use kohakuriver_apiserver::AuthConfig;

/// Who may use the server, and what users may put in a task.
#[derive(clap::Args, Debug, Clone)]
pub struct AuthFlags {
    /// Accept every request without a token, as admin. Only on a loopback --listen address.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Users see only their own tasks and logs (operators and admins see all).
    #[arg(long)]
    pub private_tasks: bool,
    /// The weakest role that may run privileged tasks: viewer, user, operator or admin.
    #[arg(long, value_name = "ROLE", default_value = "operator", value_parser = parse_person_role)]
    pub privileged_for: Role,
    /// Host paths (and everything below) a user may mount with --mount; operators and admins
    /// may mount any path [default: none; for `up`, its --shared-dir when given].
    #[arg(long, value_name = "PREFIX[,PREFIX]", value_delimiter = ',', value_parser = parse_prefix)]
    pub user_mount_prefixes: Vec<String>,
}

impl AuthFlags {
    /// Refuses `--insecure-no-auth` on an address other machines can reach.
    pub fn check(&self, listen: SocketAddr) -> Result<(), String> {
        if self.insecure_no_auth && !listen.ip().is_loopback() {
            return Err(format!(
                "--insecure-no-auth lets anyone who reaches {listen} act as admin, so it is allowed only on a loopback address; use --listen 127.0.0.1:{}, or drop --insecure-no-auth and hand out tokens (kohakuriver token create)",
                listen.port()
            ));
        }
        Ok(())
    }

    /// The admission policy; `default_prefixes` apply when `--user-mount-prefixes` is not
    /// given (`up` passes its shared dir).
    pub fn policy(&self, default_prefixes: &[String]) -> Policy {
        let prefixes = if self.user_mount_prefixes.is_empty() {
            default_prefixes.to_vec()
        } else {
            self.user_mount_prefixes.clone()
        };
        Policy {
            private_tasks: self.private_tasks,
            privileged_for: self.privileged_for,
            user_mount_prefixes: prefixes,
        }
    }

    /// The server's auth settings: the policy, the tokens known only to this process, and
    /// where the first admin token goes.
    pub fn auth_config(
        &self,
        default_prefixes: &[String],
        static_tokens: Vec<(String, Identity)>,
        admin_token_file: PathBuf,
    ) -> AuthConfig {
        if self.insecure_no_auth {
            return AuthConfig {
                policy: self.policy(default_prefixes),
                ..AuthConfig::disabled()
            };
        }
        AuthConfig {
            enabled: true,
            policy: self.policy(default_prefixes),
            static_tokens,
            admin_token_file: Some(admin_token_file),
            admin_token_if_missing: false,
        }
    }
}

/// The admin token file of a data dir.
pub fn admin_token_file(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// A people's role (machines' roles cannot run tasks at all).
fn parse_person_role(s: &str) -> Result<Role, String> {
    match Role::parse(s)? {
        role @ (Role::Viewer | Role::User | Role::Operator | Role::Admin) => Ok(role),
        role => Err(format!(
            "{role} is a machine's role; expected viewer, user, operator or admin"
        )),
    }
}

/// An absolute host path, written as given (the server normalises it).
fn parse_prefix(s: &str) -> Result<String, String> {
    let s = s.trim();
    if !s.starts_with('/') {
        return Err(format!(
            "{s:?} is not an absolute path; write host path prefixes like /data or /mnt/share"
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        auth: AuthFlags,
    }

    fn flags(argv: &[&str]) -> Result<AuthFlags, String> {
        let mut full = vec!["test"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full)
            .map(|c| c.auth)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn insecure_no_auth_only_on_loopback() {
        let f = flags(&["--insecure-no-auth"]).unwrap();
        assert!(f.check("127.0.0.1:8000".parse().unwrap()).is_ok());
        assert!(f.check("[::1]:8000".parse().unwrap()).is_ok());
        let e = f.check("0.0.0.0:8000".parse().unwrap()).unwrap_err();
        assert!(
            e.contains("0.0.0.0:8000") && e.contains("loopback") && e.contains("127.0.0.1:8000"),
            "{e}"
        );
        assert!(f.check("10.0.0.1:8000".parse().unwrap()).is_err());
        let secure = flags(&[]).unwrap();
        assert!(secure.check("0.0.0.0:8000".parse().unwrap()).is_ok());
    }

    #[test]
    fn policy_from_flags() {
        let f = flags(&[]).unwrap();
        assert_eq!(f.policy(&[]), Policy::default());
        assert_eq!(f.policy(&["/share".into()]).user_mount_prefixes, ["/share"]);
        let f = flags(&[
            "--private-tasks",
            "--privileged-for",
            "admin",
            "--user-mount-prefixes",
            "/data,/scratch",
        ])
        .unwrap();
        let p = f.policy(&["/share".into()]);
        assert!(p.private_tasks);
        assert_eq!(p.privileged_for, Role::Admin);
        assert_eq!(p.user_mount_prefixes, ["/data", "/scratch"]);
    }

    #[test]
    fn bad_flags_name_the_value() {
        let e = flags(&["--privileged-for", "node"]).unwrap_err();
        assert!(e.contains("machine's role"), "{e}");
        let e = flags(&["--privileged-for", "root"]).unwrap_err();
        assert!(e.contains("\"root\" is not a role"), "{e}");
        let e = flags(&["--user-mount-prefixes", "data"]).unwrap_err();
        assert!(e.contains("\"data\" is not an absolute path"), "{e}");
    }

    #[test]
    fn auth_config_is_off_only_under_insecure_no_auth() {
        let token = ("krv_x".to_string(), Identity::new("c", Role::Controllers));
        let on = flags(&[])
            .unwrap()
            .auth_config(&[], vec![token.clone()], "/d/admin.token".into());
        assert!(on.enabled);
        assert_eq!(on.static_tokens, std::slice::from_ref(&token));
        assert_eq!(on.admin_token_file, Some(PathBuf::from("/d/admin.token")));
        let off = flags(&["--insecure-no-auth"]).unwrap().auth_config(
            &[],
            vec![token],
            "/d/admin.token".into(),
        );
        assert!(!off.enabled);
        assert!(off.static_tokens.is_empty() && off.admin_token_file.is_none());
    }
}
