//! Every example manifest parses and validates, and the JSON Schema under
//! `manifests/schema/` matches the types (run with `UPDATE_SCHEMA=1` to rewrite it).

use std::path::{Path, PathBuf};

use kohakuriver_api::Manifest;
use kohakuriver_api::group::validate::validate_group;
use kohakuriver_api::manifest::parse_manifests;
use kohakuriver_api::schema::schema_files;
use kohakuriver_api::validation::{validate_node, validate_task};

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

#[test]
fn every_example_manifest_is_valid() {
    let mut files = Vec::new();
    yaml_files(&manifests_dir(), &mut files);
    assert!(
        files.len() >= 5,
        "expected the example manifests, found {files:?}"
    );
    let mut objects = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable manifest");
        let manifests =
            parse_manifests(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!manifests.is_empty(), "{} holds no object", file.display());
        for m in manifests {
            let errors = match &m {
                Manifest::Task(t) => validate_task(t),
                Manifest::Node(n) => validate_node(n),
                Manifest::TaskGroup(g) => validate_group(g),
            };
            assert!(
                errors.is_empty(),
                "{}: {} {}: {errors:?}",
                file.display(),
                m.kind(),
                m.name()
            );
            objects += 1;
        }
    }
    assert!(objects >= 7);
}

#[test]
fn json_schema_files_are_current() {
    let dir = manifests_dir().join("schema");
    let update = std::env::var_os("UPDATE_SCHEMA").is_some();
    for (name, content) in schema_files() {
        let path = dir.join(name);
        if update {
            std::fs::create_dir_all(&dir).expect("create schema dir");
            std::fs::write(&path, &content).expect("write schema");
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == content,
            "{} is stale: run `UPDATE_SCHEMA=1 cargo test -p kohakuriver-tests --test manifests` and commit it",
            path.display()
        );
    }
}
