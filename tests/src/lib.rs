//! Whole-system test harness for KohakuRiver: the real `kohakuriver` binary, real child
//! processes (server, agents, `up`), a real Docker engine and a tiny test image.
//!
//! The tests themselves live in `tests/tests/`. Typical use:
//!
//! ```no_run
//! use std::time::Duration;
//! use kohakuriver_tests::{Cluster, docker_ready};
//!
//! if !docker_ready() {
//!     return; // KOHAKURIVER_SKIP_DOCKER_TESTS=1 and no Docker
//! }
//! let mut cluster = Cluster::start();
//! let node = cluster.add_agent("seed");
//! let id = cluster.submit(&["-t", &node, "--", "echo", "Hello World"]);
//! cluster.wait_phase(&id, &["Succeeded"], Duration::from_secs(30));
//! assert_eq!(cluster.kr(&["task", "logs", &id]).ok().stdout, "Hello World\n");
//! ```
//!
//! Every cluster has its own CLI config (`KOHAKURIVER_CONFIG` in its temp dir) and data
//! dirs, so tests never touch the user's `~/.kohakuriver`; the server logs that config in
//! as admin at its first start, agents get node tokens made through the CLI, and
//! [`Cluster::kr_as`] runs the CLI as anyone else.
//!
//! Every child process is killed and every container of the cluster's nodes removed when
//! the [`Cluster`] is dropped; on a failing test the daemons' logs are printed.
//! Processes can be killed with SIGKILL and restarted on the same database, data
//! directories and ports ([`Cluster::kill_agent`], [`Cluster::restart_agent`],
//! [`Cluster::kill_server`], [`Cluster::restart_server`]), for fault scenarios; an agent
//! can reach the server through a [`Proxy`] the test cuts and restores (a partition).

mod access;
mod binary;
mod cluster;
mod docker;
mod http;
mod kubectl;
mod process;
mod proxy;
mod run;
mod wait;

pub use access::Access;
pub use binary::binary;
pub use cluster::{AgentOptions, Cluster, ServerOptions};
pub use docker::{
    IMAGE, docker, docker_ready, ensure_image, privileged_containers_work, remove_node_containers,
};
pub use http::{HttpResponse, http_get, http_get_auth, http_get_with, https_get};
pub use kubectl::{Kubectl, kubectl_binary, kubectl_cluster};
pub use process::{Proc, free_port};
pub use proxy::Proxy;
pub use run::{Chunks, Run, Stream, cli_command};
pub use wait::{unique_name, wait_for, wait_until};
