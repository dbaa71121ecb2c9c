//! Where the `kohakuriver` binary under test is.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `kohakuriver` binary: `$KOHAKURIVER_BIN` if set, else
/// `<target dir>/debug/kohakuriver` where the target dir is `$CARGO_TARGET_DIR` (relative
/// paths are taken from the workspace root) or `<workspace>/target`.
///
/// Panics with "run `cargo build -p kohakuriver` first" when it does not exist.
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let path = match std::env::var_os("KOHAKURIVER_BIN") {
            Some(bin) => PathBuf::from(bin),
            None => {
                let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .parent()
                    .expect("tests/ has a parent")
                    .to_path_buf();
                let target = match std::env::var_os("CARGO_TARGET_DIR") {
                    Some(dir) => {
                        let dir = PathBuf::from(dir);
                        if dir.is_absolute() {
                            dir
                        } else {
                            workspace.join(dir)
                        }
                    }
                    None => workspace.join("target"),
                };
                target.join("debug").join("kohakuriver")
            }
        };
        if !path.is_file() {
            panic!(
                "the kohakuriver binary is not at {}: run `cargo build -p kohakuriver` first",
                path.display()
            );
        }
        path
    })
}
