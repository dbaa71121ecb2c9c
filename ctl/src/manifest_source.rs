//! Reading manifests named by `-f`: files, directories (every `*.yaml`, `*.yml`, `*.json` in
//! them, sorted by name) and `-` for stdin. Every error names the file and the document.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kohakuriver_api::Manifest;

/// One object read from a manifest, with where it came from.
#[derive(Debug)]
pub struct Sourced {
    /// `FILE document N`, for messages.
    pub origin: String,
    /// The object.
    pub manifest: Manifest,
}

/// The `-f` arguments of `apply` and `diff`.
#[derive(clap::Args, Debug)]
pub struct ManifestFiles {
    /// Manifest file, directory (its *.yaml, *.yml, *.json, sorted) or `-` for stdin; repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    pub files: Vec<PathBuf>,
}

impl ManifestFiles {
    /// Reads every object of every source, in order (`read_all`).
    pub fn read_all(&self) -> anyhow::Result<Vec<Sourced>> {
        read_all(&self.files)
    }
}

/// Reads every object of every source, in order. Nothing is returned unless everything
/// parsed: applying half of a broken set (and pruning the rest) would be worse than nothing.
pub fn read_all(sources: &[PathBuf]) -> anyhow::Result<Vec<Sourced>> {
    let mut out = Vec::new();
    for source in sources {
        for file in expand(source)? {
            let (label, text) = read_text(&file)?;
            out.extend(parse(&label, &text)?);
        }
    }
    if out.is_empty() {
        bail!("no objects found in {}", display_sources(sources));
    }
    Ok(out)
}

/// The objects of one text, each tagged with `label document N`.
pub fn parse(label: &str, text: &str) -> anyhow::Result<Vec<Sourced>> {
    let manifests =
        kohakuriver_api::manifest::parse_manifests(text).with_context(|| label.to_string())?;
    // Document numbers count empty documents too; recount them to tag each object.
    let mut out = Vec::new();
    for (i, manifest) in manifests.into_iter().enumerate() {
        let origin = format!("{label} object {}", i + 1);
        if manifest.name().is_empty() {
            bail!("{origin}: metadata.name: required");
        }
        out.push(Sourced { origin, manifest });
    }
    Ok(out)
}

/// A directory's manifest files, sorted; a file as itself; `-` as stdin.
fn expand(source: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if source.as_os_str() == "-" {
        return Ok(vec![source.to_path_buf()]);
    }
    let meta =
        std::fs::metadata(source).with_context(|| format!("cannot read {}", source.display()))?;
    if !meta.is_dir() {
        return Ok(vec![source.to_path_buf()]);
    }
    let mut files = Vec::new();
    let entries =
        std::fs::read_dir(source).with_context(|| format!("cannot read {}", source.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read {}", source.display()))?
            .path();
        if path.is_file() && is_manifest_file(&path) {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!(
            "{} holds no *.yaml, *.yml or *.json files",
            source.display()
        );
    }
    Ok(files)
}

fn is_manifest_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn read_text(file: &Path) -> anyhow::Result<(String, String)> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read manifests from stdin")?;
        return Ok(("<stdin>".to_string(), text));
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok((file.display().to_string(), text))
}

fn display_sources(sources: &[PathBuf]) -> String {
    let names: Vec<String> = sources.iter().map(|s| s.display().to_string()).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: &str =
        "apiVersion: kohakuriver/v1\nkind: Task\nmetadata: {name: a}\nspec: {command: [echo]}\n";

    #[test]
    fn errors_name_file_document_and_field() {
        let text = format!(
            "{TASK}---\n{}",
            TASK.replace("command: [echo]", "command: [x], cpus: 2")
                .replace("name: a", "name: b")
        );
        let err = parse("dir/t.yaml", &text).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with("dir/t.yaml: document 2: spec.cpus: unknown field"),
            "{msg}"
        );
        let err = parse("x.yaml", &TASK.replace("name: a", "labels: {}")).unwrap_err();
        assert_eq!(err.to_string(), "x.yaml object 1: metadata.name: required");
    }

    #[test]
    fn directories_are_read_sorted_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yml"), TASK.replace("name: a", "name: b")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), TASK).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let got = read_all(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<&str> = got.iter().map(|s| s.manifest.name()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(got[0].origin.ends_with("a.yaml object 1"));
        let empty = tempfile::tempdir().unwrap();
        let err = read_all(&[empty.path().to_path_buf()]).unwrap_err();
        assert!(err.to_string().contains("holds no *.yaml"), "{err}");
    }
}
