//! CA fingerprints and pinned credentials: `TOKEN@sha256:HEX`, where HEX is the SHA-256 of
//! the cluster CA's DER, so whoever holds the credential can check the server's CA on first
//! contact without having the CA file.

use sha2::{Digest, Sha256};

use crate::config::parse_certs;
use crate::error::Error;

/// Lowercase hex SHA-256 of the DER of the first certificate in `pem`.
pub fn fingerprint(pem: &[u8]) -> Result<String, Error> {
    let certs = parse_certs(pem, "the CA")?;
    Ok(hex(&Sha256::digest(certs[0].as_ref())))
}

/// Splits a credential written `TOKEN` or `TOKEN@sha256:HEX` into the token and the pinned
/// CA fingerprint (lowercase hex; `:` separators as `openssl x509 -fingerprint` prints them
/// are accepted). Tokens never contain `@`, so the last `@` starts the pin.
pub fn split_credential(credential: &str) -> Result<(String, Option<String>), Error> {
    let credential = credential.trim();
    let Some((token, pin)) = credential.rsplit_once('@') else {
        return Ok((credential.to_string(), None));
    };
    let bad = |reason: &str| Error::BadFingerprint {
        given: pin.to_string(),
        reason: reason.to_string(),
    };
    let hex_part = pin
        .strip_prefix("sha256:")
        .or_else(|| pin.strip_prefix("SHA256:"))
        .ok_or_else(|| bad("it does not start with sha256:"))?;
    let digits: String = hex_part.chars().filter(|c| *c != ':').collect();
    if digits.len() != 64 {
        return Err(bad(&format!(
            "a SHA-256 fingerprint has 64 hex digits, this has {}",
            digits.len()
        )));
    }
    if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad("it holds characters that are not hex digits"));
    }
    Ok((token.to_string(), Some(digits.to_ascii_lowercase())))
}

/// Checks that the CA in `pem` has the `expected` fingerprint (lowercase hex, as
/// [`split_credential`] gives it).
pub fn check_pinned(pem: &[u8], expected: &str) -> Result<(), Error> {
    let actual = fingerprint(pem)?;
    if actual != expected.to_ascii_lowercase() {
        return Err(Error::FingerprintMismatch {
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[track_caller]
    fn check(credential: &str, want: Result<(&str, Option<&str>), &str>) {
        let got = split_credential(credential);
        match (got, want) {
            (Ok((token, pin)), Ok((want_token, want_pin))) => {
                assert_eq!(token, want_token, "{credential}");
                assert_eq!(pin.as_deref(), want_pin, "{credential}");
            }
            (Err(e), Err(part)) => assert!(e.to_string().contains(part), "{credential}: {e}"),
            (got, want) => panic!("{credential}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn credentials_split() {
        check("krv_abc", Ok(("krv_abc", None)));
        check(" krv_abc\n", Ok(("krv_abc", None)));
        check(&format!("krv_abc@sha256:{FP}"), Ok(("krv_abc", Some(FP))));
        let upper = FP.to_ascii_uppercase();
        check(
            &format!("krv_abc@SHA256:{upper}"),
            Ok(("krv_abc", Some(FP))),
        );
        let colons = FP
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        check(
            &format!("krv_abc@sha256:{colons}"),
            Ok(("krv_abc", Some(FP))),
        );
        check("krv_abc@md5:00", Err("does not start with sha256:"));
        check("krv_abc@sha256:abcd", Err("64 hex digits, this has 4"));
        check(
            &format!("krv_abc@sha256:{}", "g".repeat(64)),
            Err("not hex digits"),
        );
    }

    #[test]
    fn pins_compare_the_first_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let want = hex(&Sha256::digest(cert.der().as_ref()));
        let pem = format!("{}{}", cert.pem(), cert.pem());
        assert_eq!(fingerprint(pem.as_bytes()).unwrap(), want);
        check_pinned(pem.as_bytes(), &want).unwrap();
        check_pinned(pem.as_bytes(), &want.to_ascii_uppercase()).unwrap();
        let err = check_pinned(pem.as_bytes(), FP).unwrap_err();
        assert!(matches!(err, Error::FingerprintMismatch { .. }), "{err}");
        let err = fingerprint(b"not pem").unwrap_err();
        assert!(
            err.to_string().contains("no usable PEM certificate"),
            "{err}"
        );
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab]), "000fab");
    }
}
