//! `kohakuriver whoami`: who the server takes this CLI for, and what that role may do.

use std::process::ExitCode;

use anyhow::Context;
use kohakuriver_api::auth::WhoAmI;
use kohakuriver_client::Client;

/// Options of `kohakuriver whoami`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kohakuriver whoami
  kohakuriver --server http://head:8000 --token \"$(cat alice.token)\" whoami")]
pub struct Args {}

/// Prints the identity of this CLI's credential.
pub async fn run(client: &Client, _args: Args) -> anyhow::Result<ExitCode> {
    let me = client
        .whoami()
        .await
        .with_context(|| format!("cannot ask {} who this credential is", client.base_url()))?;
    print!("{}", describe_whoami(&me, client.base_url()));
    Ok(ExitCode::SUCCESS)
}

/// The `whoami` view (pure).
pub fn describe_whoami(me: &WhoAmI, server: &str) -> String {
    let mut out = format!(
        "name:    {}\nrole:    {}\nserver:  {server}\n",
        me.name, me.role
    );
    if !me.authenticated {
        out.push_str(
            "note:    the server runs without authentication (--insecure-no-auth): everyone is admin\n",
        );
    }
    out.push_str("may:\n");
    for line in &me.may {
        out.push_str(&format!("  - {line}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::Role;

    #[test]
    fn whoami_view() {
        let me = WhoAmI {
            name: "alice".into(),
            role: Role::User,
            may: vec!["submit tasks".into(), "read tasks".into()],
            authenticated: true,
        };
        assert_eq!(
            describe_whoami(&me, "http://h:1"),
            "name:    alice\nrole:    user\nserver:  http://h:1\nmay:\n  - submit tasks\n  - read tasks\n"
        );
        let anon = WhoAmI {
            authenticated: false,
            ..me
        };
        assert!(describe_whoami(&anon, "u").contains("--insecure-no-auth"));
    }
}
