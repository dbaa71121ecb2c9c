//! `kohakuriver token create|list|revoke` (admin): the credentials of people, pipelines and
//! nodes. A token's secret is shown once, by `create`; `list` never shows one.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use kohakuriver_api::auth::{CreatedToken, TokenInfo, TokenRequest};
use kohakuriver_api::{Role, Timestamp};
use kohakuriver_client::Client;

use crate::output::{Format, Table, age, to_json, to_yaml};
use crate::wait::parse_duration;

/// `kohakuriver token …`.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token; prints it alone on stdout (it is shown this once).
    #[command(after_help = "Examples:
  kohakuriver token create --name alice --role user > alice.token
  kohakuriver token create --name ci --role operator --ttl 30d
  kohakuriver token create --name gpu-01 --role node
  kohakuriver token create --name rack-3 --role join --uses 8 --ttl 1h
  kohakuriver token create --name prometheus --role metrics

Roles: viewer (read), user (submit and manage own tasks), operator (every task, cordon
nodes, privileged tasks and host mounts), admin (also tokens); node (one agent, named by
--name), join (exchanged by `kohakuriver agent --token` for a node credential),
controllers (scheduler and lifecycles), metrics (GET /metrics only, for a scraper).")]
    Create(CreateArgs),
    /// List tokens: id, name, role, times and uses; never a secret.
    #[command(after_help = "Examples:
  kohakuriver token list
  kohakuriver token list -o yaml")]
    List(ListArgs),
    /// Revoke a token by id or name; it is refused from its next request on.
    #[command(after_help = "Examples:
  kohakuriver token revoke alice
  kohakuriver token revoke 3k9x2m1q")]
    Revoke(RevokeArgs),
}

/// Flags of `token create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Whose token it is: a person, a pipeline, or the node name for role node.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// viewer, user, operator, admin, node, join, controllers or metrics.
    #[arg(long, value_name = "ROLE", value_parser = Role::parse)]
    pub role: Role,
    /// Lifetime, e.g. 12h, 30d (default: no expiry).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<std::time::Duration>,
    /// For role join: how many nodes may join with it (default 1).
    #[arg(long, value_name = "N")]
    pub uses: Option<u32>,
}

/// Flags of `token list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Format>,
}

/// Flags of `token revoke`.
#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The token's id (as `token list` shows it) or name. (Not called `token`: that is the
    /// global --token's id, and clap would share the value between them.)
    #[arg(value_name = "ID|NAME")]
    pub id_or_name: String,
}

/// Runs a `token` subcommand.
pub async fn run(client: &Client, command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create(args) => {
            if args.uses.is_some() && args.role != Role::Join {
                anyhow::bail!(
                    "--uses counts the nodes a join token admits; it does not apply to role {}",
                    args.role
                );
            }
            let request = TokenRequest {
                name: args.name.clone(),
                role: args.role,
                ttl_seconds: args.ttl.map(|d| d.as_secs().max(1)),
                uses: args.uses,
            };
            let created = client.create_token(&request).await.with_context(|| {
                format!("cannot create a {} token for {:?}", args.role, args.name)
            })?;
            println!("{}", shown_token(&created));
        }
        TokenCommand::List(args) => {
            let list = client.list_tokens().await.context("cannot list tokens")?;
            match args.output.unwrap_or_default() {
                Format::Yaml => print!("{}", to_yaml(&list)?),
                Format::Json => print!("{}", to_json(&list)?),
                Format::Name => list.items.iter().for_each(|t| println!("token/{}", t.id)),
                Format::Table | Format::Wide if list.items.is_empty() => {
                    eprintln!("no tokens found")
                }
                Format::Table | Format::Wide => {
                    print!("{}", token_table(&list.items, chrono::Utc::now()).render())
                }
            }
        }
        TokenCommand::Revoke(args) => {
            let info = client
                .revoke_token(&args.id_or_name)
                .await
                .with_context(|| format!("cannot revoke token {:?}", args.id_or_name))?;
            println!("token {} ({} {:?}) revoked", info.id, info.role, info.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The token as `create` prints it: `TOKEN`, or `TOKEN@sha256:HEX` for a node or join token
/// of a server with its own CA, so the node can check the server on first contact.
pub fn shown_token(created: &CreatedToken) -> String {
    match (&created.ca_fingerprint, created.info.role) {
        (Some(fingerprint), Role::Node | Role::Join) => {
            let hex = fingerprint.trim_start_matches("sha256:");
            format!("{}@sha256:{hex}", created.token)
        }
        _ => created.token.clone(),
    }
}

/// The `token list` table (pure).
pub fn token_table(tokens: &[TokenInfo], now: Timestamp) -> Table {
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "ROLE",
        "CREATED",
        "EXPIRES",
        "LAST USED",
        "USES LEFT",
    ]);
    for t in tokens {
        let expires = match t.expires_at {
            None => "never".to_string(),
            Some(at) if at <= now => format!("expired {} ago", age(Some(at), now)),
            Some(at) => format!("in {}", age(Some(now), at)),
        };
        table.push(vec![
            t.id.clone(),
            t.name.clone(),
            t.role.to_string(),
            format!("{} ago", age(Some(t.created_at), now)),
            expires,
            t.last_used_at
                .map(|at| format!("{} ago", age(Some(at), now)))
                .unwrap_or_else(|| "never".to_string()),
            t.uses_left
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".to_string()),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_000_000 + secs, 0).unwrap()
    }

    fn info(name: &str, role: Role) -> TokenInfo {
        TokenInfo {
            id: "abcd1234".into(),
            name: name.into(),
            role,
            created_at: at(-3600),
            expires_at: None,
            last_used_at: None,
            uses_left: None,
        }
    }

    #[test]
    fn node_and_join_tokens_carry_the_ca_fingerprint() {
        let mut created = CreatedToken {
            token: "krv_abcd1234_s".into(),
            info: info("gpu-01", Role::Node),
            ca_fingerprint: None,
        };
        assert_eq!(shown_token(&created), "krv_abcd1234_s");
        created.ca_fingerprint = Some("00ff".into());
        assert_eq!(shown_token(&created), "krv_abcd1234_s@sha256:00ff");
        created.ca_fingerprint = Some("sha256:00ff".into());
        assert_eq!(shown_token(&created), "krv_abcd1234_s@sha256:00ff");
        created.info.role = Role::Join;
        assert_eq!(shown_token(&created), "krv_abcd1234_s@sha256:00ff");
        created.info.role = Role::User;
        assert_eq!(shown_token(&created), "krv_abcd1234_s");
    }

    #[test]
    fn token_table_shows_times_and_uses_never_a_secret() {
        let mut join = info("rack-3", Role::Join);
        join.expires_at = Some(at(7200));
        join.uses_left = Some(3);
        let mut old = info("bob", Role::User);
        old.expires_at = Some(at(-60));
        old.last_used_at = Some(at(-120));
        let text = token_table(&[info("alice", Role::User), join, old], at(0)).render();
        assert_eq!(
            text,
            "\
ID         NAME     ROLE   CREATED   EXPIRES           LAST USED   USES LEFT
abcd1234   alice    user   60m ago   never             never       -
abcd1234   rack-3   join   60m ago   in 120m           never       3
abcd1234   bob      user   60m ago   expired 60s ago   2m ago      -
"
        );
    }
}
