//! What an environment tarball would tag if loaded, read before `docker load` runs.
//!
//! `docker load` tags whatever names the tarball's `manifest.json` lists (and, with the
//! containerd image store, its `index.json` names), so a tarball in shared storage named
//! `torch.tar` could replace `ubuntu:22.04` or any other task's image on every node that
//! loads it. The agent therefore reads those names first ([`read_tags`], a small reader of
//! tar headers: ustar, GNU long names and PAX records) and loads the tarball only when
//! [`check_tags`] finds nothing but `kohakuriver/NAME:base`.

use std::io::{Read, Seek, SeekFrom};

use crate::container_config::environment_image;

/// Largest `manifest.json` or `index.json` read (they are a few hundred bytes in practice).
const MAX_JSON: u64 = 4 << 20;
/// Largest GNU long name or PAX header read.
const MAX_META: u64 = 1 << 20;

/// Why a tarball's names cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TarballError {
    /// Reading failed.
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    /// Not a tar archive, or a damaged one.
    #[error("it is not a tar archive ({0}); make it with docker save")]
    NotTar(String),
    /// No `manifest.json`: not made by `docker save`.
    #[error("it has no manifest.json; make it with docker save kohakuriver/NAME:base")]
    NoManifest,
    /// `manifest.json` or `index.json` is not what `docker save` writes.
    #[error("its {file} cannot be read: {message}")]
    BadJson {
        /// Which file.
        file: &'static str,
        /// What was wrong.
        message: String,
    },
}

/// Every image name loading the tarball would tag: the `RepoTags` of `manifest.json`, then
/// the image names of `index.json` (when present).
pub fn read_tags<R: Read + Seek>(mut tar: R) -> Result<Vec<String>, TarballError> {
    let mut manifest = None;
    let mut index = None;
    let mut long_name: Option<String> = None;
    let mut pax_path: Option<String> = None;
    let mut pax_size: Option<u64> = None;
    let mut header = [0u8; 512];
    loop {
        if !read_block(&mut tar, &mut header)? || header.iter().all(|b| *b == 0) {
            break;
        }
        check_checksum(&header)?;
        let size = match pax_size.take() {
            Some(size) => size,
            None => parse_number(&header[124..136])?,
        };
        let padded = size.div_ceil(512) * 512;
        let kind = header[156];
        match kind {
            b'L' => {
                long_name = Some(read_string(&mut tar, size, padded)?);
                continue;
            }
            b'x' => {
                let records = read_string(&mut tar, size, padded)?;
                for (key, value) in pax_records(&records) {
                    match key {
                        "path" => pax_path = Some(value.to_string()),
                        "size" => {
                            pax_size = Some(value.parse().map_err(|_| {
                                TarballError::NotTar(format!("bad pax size {value:?}"))
                            })?)
                        }
                        _ => {}
                    }
                }
                continue;
            }
            _ => {}
        }
        let name = pax_path
            .take()
            .or(long_name.take())
            .unwrap_or_else(|| header_name(&header));
        let regular = kind == b'0' || kind == 0;
        let wanted = match name.trim_start_matches("./") {
            "manifest.json" if regular => Some(&mut manifest),
            "index.json" if regular => Some(&mut index),
            _ => None,
        };
        match wanted {
            Some(slot) => {
                if size > MAX_JSON {
                    return Err(TarballError::NotTar(format!(
                        "{name} is {size} bytes, too large"
                    )));
                }
                let mut bytes = vec![0; size as usize];
                tar.read_exact(&mut bytes)?;
                tar.seek(SeekFrom::Current((padded - size) as i64))?;
                *slot = Some(bytes);
            }
            None => {
                tar.seek(SeekFrom::Current(padded as i64))?;
            }
        }
    }
    let manifest = manifest.ok_or(TarballError::NoManifest)?;
    let mut tags = manifest_tags(&manifest)?;
    if let Some(index) = index {
        tags.extend(index_names(&index)?);
    }
    Ok(tags)
}

/// Refuses any name but the environment's own image (`kohakuriver/NAME:base`, also written
/// `docker.io/kohakuriver/NAME:base`); the refusal names every name found.
pub fn check_tags(name: &str, tags: &[String]) -> Result<(), String> {
    let allowed = environment_image(name);
    let qualified = format!("docker.io/{allowed}");
    let foreign: Vec<&String> = tags
        .iter()
        .filter(|t| **t != allowed && **t != qualified)
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    let found: Vec<&str> = tags.iter().map(String::as_str).collect();
    Err(format!(
        "it tags {} but an environment tarball for {name:?} may tag only {allowed}; make it with docker save {allowed}",
        found.join(", ")
    ))
}

fn manifest_tags(bytes: &[u8]) -> Result<Vec<String>, TarballError> {
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(rename = "RepoTags", default)]
        repo_tags: Option<Vec<String>>,
    }
    let entries: Vec<Entry> = serde_json::from_slice(bytes).map_err(|e| TarballError::BadJson {
        file: "manifest.json",
        message: e.to_string(),
    })?;
    Ok(entries
        .into_iter()
        .flat_map(|e| e.repo_tags.unwrap_or_default())
        .collect())
}

/// Names an OCI index gives its images: the containerd name, and a ref name that is a whole
/// reference (a bare tag like `base` names nothing by itself).
fn index_names(bytes: &[u8]) -> Result<Vec<String>, TarballError> {
    let index: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| TarballError::BadJson {
            file: "index.json",
            message: e.to_string(),
        })?;
    let mut names = Vec::new();
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    for m in manifests {
        let annotations = &m["annotations"];
        if let Some(n) = annotations["io.containerd.image.name"].as_str() {
            names.push(n.to_string());
        }
        if let Some(n) = annotations["org.opencontainers.image.ref.name"].as_str()
            && (n.contains('/') || n.contains(':'))
        {
            names.push(n.to_string());
        }
    }
    Ok(names)
}

/// Reads one 512-byte block; false at a clean end of file.
fn read_block(r: &mut impl Read, block: &mut [u8; 512]) -> Result<bool, TarballError> {
    let mut filled = 0;
    while filled < block.len() {
        match r.read(&mut block[filled..])? {
            0 if filled == 0 => return Ok(false),
            0 => return Err(TarballError::NotTar("it ends inside a header".into())),
            n => filled += n,
        }
    }
    Ok(true)
}

fn check_checksum(header: &[u8; 512]) -> Result<(), TarballError> {
    let stored = parse_number(&header[148..156])?;
    let sum: u64 = header
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u64
            }
        })
        .sum();
    if sum == stored {
        Ok(())
    } else {
        Err(TarballError::NotTar("a header checksum is wrong".into()))
    }
}

/// A numeric header field: octal text, or GNU base-256 when the high bit is set.
fn parse_number(field: &[u8]) -> Result<u64, TarballError> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        return Ok(field[1..]
            .iter()
            .fold(u64::from(field[0] & 0x7f), |n, b| (n << 8) | u64::from(*b)));
    }
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8)
        .map_err(|_| TarballError::NotTar(format!("bad number field {text:?}")))
}

fn header_name(header: &[u8; 512]) -> String {
    let text = |b: &[u8]| {
        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let name = text(&header[..100]);
    let prefix = if &header[257..262] == b"ustar" {
        text(&header[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

fn read_string(r: &mut (impl Read + Seek), size: u64, padded: u64) -> Result<String, TarballError> {
    if size > MAX_META {
        return Err(TarballError::NotTar(format!(
            "a {size}-byte name header is too large"
        )));
    }
    let mut bytes = vec![0; size as usize];
    r.read_exact(&mut bytes)?;
    r.seek(SeekFrom::Current((padded - size) as i64))?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text.trim_end_matches('\0').to_string())
}

/// `LEN key=value\n` records of a PAX header.
fn pax_records(text: &str) -> Vec<(&str, &str)> {
    let mut records = Vec::new();
    let mut rest = text;
    while let Some((len, after)) = rest.split_once(' ') {
        let Ok(len) = len.parse::<usize>() else {
            break;
        };
        let body_len = len.saturating_sub(len.to_string().len() + 1);
        if body_len == 0 || after.len() < body_len {
            break;
        }
        let record = after[..body_len].trim_end_matches('\n');
        if let Some((k, v)) = record.split_once('=') {
            records.push((k, v));
        }
        rest = &after[body_len..];
    }
    records
}

/// Builds tar archives in tests.
#[cfg(test)]
pub(crate) mod build {
    /// A header block for `name` of `size` bytes and type `kind`.
    pub fn header(name: &str, size: usize, kind: u8) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    /// A tar of these entries: `(name, type, content)`.
    pub fn tar(entries: &[(&str, u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, content) in entries {
            out.extend_from_slice(&header(name, content.len(), *kind));
            out.extend_from_slice(content);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    /// A `docker save`-like tarball whose manifest tags `tags`.
    pub fn image_tar(tags: &[&str]) -> Vec<u8> {
        let manifest = serde_json::json!([{
            "Config": "abc.json",
            "RepoTags": tags,
            "Layers": ["l1/layer.tar"],
        }])
        .to_string();
        tar(&[
            ("l1/", b'5', b""),
            ("l1/layer.tar", b'0', &[7u8; 1500]),
            ("abc.json", b'0', b"{}"),
            ("manifest.json", b'0', manifest.as_bytes()),
            ("repositories", b'0', b"{}"),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::build::{image_tar, tar};
    use super::*;
    use std::io::Cursor;

    fn tags_of(bytes: Vec<u8>) -> Result<Vec<String>, String> {
        read_tags(Cursor::new(bytes)).map_err(|e| e.to_string())
    }

    #[test]
    fn manifest_tags_are_read_past_other_entries() {
        assert_eq!(
            tags_of(image_tar(&["kohakuriver/torch:base"])),
            Ok(vec!["kohakuriver/torch:base".to_string()])
        );
        assert_eq!(
            tags_of(image_tar(&["kohakuriver/torch:base", "ubuntu:22.04"])),
            Ok(vec![
                "kohakuriver/torch:base".to_string(),
                "ubuntu:22.04".to_string()
            ])
        );
        assert_eq!(tags_of(image_tar(&[])), Ok(vec![]));
    }

    #[test]
    fn index_names_count_too() {
        let manifest = br#"[{"RepoTags":["kohakuriver/e:base"]}]"#;
        let index = br#"{"manifests":[{"annotations":{
            "io.containerd.image.name":"docker.io/library/ubuntu:22.04",
            "org.opencontainers.image.ref.name":"base"}}]}"#;
        let t = tar(&[
            ("index.json", b'0', index),
            ("manifest.json", b'0', manifest),
        ]);
        assert_eq!(
            tags_of(t),
            Ok(vec![
                "kohakuriver/e:base".to_string(),
                "docker.io/library/ubuntu:22.04".to_string()
            ])
        );
    }

    #[test]
    fn long_names_and_pax_paths_rename_the_next_entry() {
        let manifest = br#"[{"RepoTags":["evil:latest"]}]"#;
        let harmless = br#"[{"RepoTags":["kohakuriver/e:base"]}]"#;
        // A GNU long name turns a decoy entry into manifest.json, and a PAX path turns the
        // entry called manifest.json into something else.
        let t = tar(&[
            ("././@LongLink", b'L', b"manifest.json\0"),
            ("decoy", b'0', manifest),
            ("pax", b'x', b"20 path=not-it.json\n"),
            ("manifest.json", b'0', harmless),
        ]);
        assert_eq!(tags_of(t), Ok(vec!["evil:latest".to_string()]));
    }

    #[test]
    fn missing_or_broken_archives_are_errors() {
        let no_manifest = tar(&[("repositories", b'0', b"{}")]);
        assert!(
            tags_of(no_manifest)
                .unwrap_err()
                .contains("no manifest.json")
        );
        let bad_json = tar(&[("manifest.json", b'0', b"{not json")]);
        assert!(tags_of(bad_json).unwrap_err().contains("manifest.json"));
        let mut garbage = vec![b'x'; 2048];
        garbage[0] = b'a';
        assert!(tags_of(garbage).unwrap_err().contains("not a tar archive"));
        let mut truncated = image_tar(&["a:b"]);
        truncated.truncate(700);
        assert!(tags_of(truncated).is_err());
        assert!(
            tags_of(Vec::new())
                .unwrap_err()
                .contains("no manifest.json")
        );
    }

    #[test]
    fn only_the_environments_own_image_may_be_tagged() {
        let ok = |tags: &[&str]| {
            let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            check_tags("torch", &tags)
        };
        assert_eq!(ok(&["kohakuriver/torch:base"]), Ok(()));
        assert_eq!(ok(&["docker.io/kohakuriver/torch:base"]), Ok(()));
        assert_eq!(ok(&[]), Ok(()));
        let err = ok(&["kohakuriver/torch:base", "ubuntu:22.04"]).unwrap_err();
        assert!(
            err.contains("kohakuriver/torch:base, ubuntu:22.04"),
            "{err}"
        );
        assert!(err.contains("may tag only kohakuriver/torch:base"), "{err}");
        assert!(ok(&["kohakuriver/other:base"]).is_err());
        assert!(ok(&["kohakuriver/torch:latest"]).is_err());
        assert!(ok(&["kohakuriver/torch"]).is_err());
    }

    #[test]
    fn numbers_in_octal_and_base_256() {
        assert_eq!(parse_number(b"00000001750\0").unwrap(), 1000);
        assert_eq!(parse_number(b"   17 \0").unwrap(), 15);
        assert_eq!(parse_number(b"\0\0\0").unwrap(), 0);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[7] = 0x02; // 2 << 32
        assert_eq!(parse_number(&big).unwrap(), 2 << 32);
        assert!(parse_number(b"9\0").is_err());
    }
}
