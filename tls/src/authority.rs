//! A cluster CA kept in a directory, and the certificates it signs (`--tls-self-signed`).
//!
//! Layout of the directory: `ca.pem`, `ca.key` (0600), `server.pem`, `server.key` (0600),
//! and `<name>.pem`/`<name>.key` for each certificate [`issue`]d (the `up` node's agent).
//! Files are made once and kept: a restart reuses them, so clients that trust the CA, and
//! credentials that pin its fingerprint, stay valid. To change a certificate's names, remove
//! its two files and restart.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::config::read;
use crate::error::Error;

/// The CA's common name; also how a stored CA is recognised when it signs again.
const CA_NAME: &str = "KohakuRiver cluster CA";
/// How long made certificates are valid. There is no rotation, so long; a clock skew of a
/// day is tolerated at the start.
const VALIDITY_DAYS: i64 = 3650;

/// What [`self_signed`] made or found.
#[derive(Clone, Debug)]
pub struct SelfSigned {
    /// The CA certificate (`ca.pem`), to serve at `/cacerts` and to trust.
    pub ca_pem: Vec<u8>,
    /// The server's certificate (`server.pem`).
    pub cert_path: PathBuf,
    /// The server's key (`server.key`).
    pub key_path: PathBuf,
}

/// What [`issue`] made or found.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate (`<name>.pem`).
    pub cert_path: PathBuf,
    /// Its key (`<name>.key`).
    pub key_path: PathBuf,
}

/// Makes, in `dir`, a CA and a server certificate for `names` (DNS names or IP addresses)
/// signed by it, unless they are there already; answers the CA and the server's files.
pub fn self_signed(dir: &Path, names: &[String]) -> Result<SelfSigned, Error> {
    create_dir(dir)?;
    let (ca_pem, _) = ensure_ca(dir)?;
    let issued = issue(dir, "server", names)?;
    Ok(SelfSigned {
        ca_pem,
        cert_path: issued.cert_path,
        key_path: issued.key_path,
    })
}

/// Makes `dir/<file_stem>.pem` and `.key`, a certificate for `names` signed by the CA in
/// `dir` (made by [`self_signed`]), unless they are there already.
pub fn issue(dir: &Path, file_stem: &str, names: &[String]) -> Result<Issued, Error> {
    let cert_path = dir.join(format!("{file_stem}.pem"));
    let key_path = dir.join(format!("{file_stem}.key"));
    if cert_path.exists() && key_path.exists() {
        return Ok(Issued {
            cert_path,
            key_path,
        });
    }
    let (_, ca_key_pem) = ensure_ca(dir)?;
    let ca_key_path = dir.join("ca.key");
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| Error::CaKey {
        path: ca_key_path.clone(),
        reason: e.to_string(),
    })?;
    // The issuer needs only the CA's name, key usages and key: the same as when it was made.
    let issuer = Issuer::new(ca_params(), ca_key);

    let names = unique(names);
    let what = format!("a certificate for {}", names.join(", "));
    let generate = |source| Error::Generate {
        what: what.clone(),
        source,
    };
    let mut params = CertificateParams::new(names.clone()).map_err(generate)?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("kohakuriver", String::as_str),
    );
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params);
    let key = KeyPair::generate().map_err(generate)?;
    let cert = params.signed_by(&key, &issuer).map_err(generate)?;
    // The key first: a certificate file without its key would be kept and be useless.
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), names = %names.join(","), "made a certificate signed by the cluster CA");
    Ok(Issued {
        cert_path,
        key_path,
    })
}

/// The CA in `dir`, made if neither file is there: `(ca.pem, ca.key)` contents.
fn ensure_ca(dir: &Path) -> Result<(Vec<u8>, String), Error> {
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let key = String::from_utf8(read(&key_path)?).map_err(|_| Error::CaKey {
                path: key_path.clone(),
                reason: "it is not PEM text".to_string(),
            })?;
            Ok((read(&cert_path)?, key))
        }
        (false, false) => {
            let generate = |source| Error::Generate {
                what: "the cluster CA".to_string(),
                source,
            };
            let mut params = ca_params();
            set_validity(&mut params);
            let key = KeyPair::generate().map_err(generate)?;
            let cert = params.self_signed(&key).map_err(generate)?;
            let key_pem = key.serialize_pem();
            write_file(&key_path, key_pem.as_bytes(), 0o600)?;
            write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
            tracing::info!(ca = %cert_path.display(), "made a cluster CA");
            Ok((cert.pem().into_bytes(), key_pem))
        }
        (has_cert, _) => {
            let (present, missing) = if has_cert {
                (&cert_path, &key_path)
            } else {
                (&key_path, &cert_path)
            };
            Err(Error::CaKey {
                path: key_path.clone(),
                reason: format!(
                    "{} is there but {} is missing",
                    present.display(),
                    missing.display()
                ),
            })
        }
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn set_validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
}

/// `names` without empty entries and repeats, in order.
fn unique(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
    }
    out
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes through a temporary file and a rename, so a crash never leaves half a key.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash would keep its old mode through `truncate`.
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deduplicated_in_order() {
        let names: Vec<String> = ["localhost", " 127.0.0.1", "", "localhost", "h"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(unique(&names), ["localhost", "127.0.0.1", "h"]);
    }
}
