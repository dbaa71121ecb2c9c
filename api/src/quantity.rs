//! Memory sizes as users write them: `512M`, `8G`, `4Gi`, `1.5G`, or plain bytes.
//!
//! Like KohakuRiver, `K`, `M`, `G`, `T` are powers of ten (`8G` = 8,000,000,000 bytes);
//! `Ki`, `Mi`, `Gi`, `Ti` are powers of two. A trailing `B` (`8GB`, `4GiB`) and lowercase
//! letters are accepted.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A memory size: the bytes it means and the text the user wrote (kept for display).
#[derive(Clone, Debug)]
pub struct Memory {
    bytes: u64,
    text: String,
}

impl Memory {
    /// Parses a size such as `512M`, `8G`, `4Gi`, `1.5G` or `1048576`.
    pub fn parse(text: &str) -> Result<Memory, String> {
        let bytes = parse_bytes(text)?;
        Ok(Memory {
            bytes,
            text: text.trim().to_string(),
        })
    }

    /// A size of exactly this many bytes.
    pub fn from_bytes(bytes: u64) -> Memory {
        Memory {
            bytes,
            text: bytes.to_string(),
        }
    }

    /// The size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Memory {
    /// Two sizes are equal when they mean the same bytes (`8G` equals `8000000000`).
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Memory {}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Memory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Memory::parse(s)
    }
}

const UNITS: &[(&str, u64)] = &[
    ("ki", 1 << 10),
    ("mi", 1 << 20),
    ("gi", 1 << 30),
    ("ti", 1 << 40),
    ("k", 1_000),
    ("m", 1_000_000),
    ("g", 1_000_000_000),
    ("t", 1_000_000_000_000),
    ("", 1),
];

/// Parses a memory size into bytes, with an error that names the value and the grammar.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let expected = "expected a size such as 512M, 8G, 4Gi or a number of bytes";
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("empty memory size: {expected}"));
    }
    let lower = trimmed.to_ascii_lowercase();
    let without_b = match lower.strip_suffix('b') {
        Some(rest) if !rest.is_empty() && !rest.ends_with(|c: char| c.is_ascii_digit()) => rest,
        Some(rest) if !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '.') => {
            rest
        }
        _ => lower.as_str(),
    };
    let split = without_b
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(without_b.len());
    let (number, unit) = without_b.split_at(split);
    let multiplier = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, m)| *m)
        .ok_or_else(|| {
            format!("invalid memory size {text:?}: unknown unit {unit:?}, {expected}")
        })?;
    if number.is_empty() {
        return Err(format!(
            "invalid memory size {text:?}: no number, {expected}"
        ));
    }
    let value = if let Some((whole, frac)) = number.split_once('.') {
        if frac.contains('.') || (whole.is_empty() && frac.is_empty()) {
            return Err(format!("invalid memory size {text:?}: {expected}"));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid memory size {text:?}: {expected}"))?;
        let bytes = value * multiplier as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(format!("memory size {text:?} is too large"));
        }
        bytes.round() as u64
    } else {
        let value: u64 = number
            .parse()
            .map_err(|_| format!("memory size {text:?} is too large"))?;
        value
            .checked_mul(multiplier)
            .ok_or_else(|| format!("memory size {text:?} is too large"))?
    };
    Ok(value)
}

/// Formats bytes for people: `8.0G` (powers of ten, like the input grammar).
pub fn format_bytes(bytes: u64) -> String {
    const STEPS: &[(u64, &str)] = &[
        (1_000_000_000_000, "T"),
        (1_000_000_000, "G"),
        (1_000_000, "M"),
        (1_000, "K"),
    ];
    for (size, unit) in STEPS {
        if bytes >= *size {
            let value = bytes as f64 / *size as f64;
            return if value >= 100.0 || bytes.is_multiple_of(*size) {
                format!("{value:.0}{unit}")
            } else {
                format!("{value:.1}{unit}")
            };
        }
    }
    format!("{bytes}")
}

impl Serialize for Memory {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(u64),
            Text(String),
        }
        match Repr::deserialize(deserializer) {
            Ok(Repr::Number(n)) => Ok(Memory::from_bytes(n)),
            Ok(Repr::Text(s)) => Memory::parse(&s).map_err(serde::de::Error::custom),
            Err(_) => Err(serde::de::Error::custom(
                "expected a memory size such as 512M, 8G, 4Gi or a number of bytes",
            )),
        }
    }
}

impl JsonSchema for Memory {
    fn schema_name() -> Cow<'static, str> {
        "Memory".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A memory size: 512M, 8G (powers of ten), 4Gi (powers of two), or bytes",
            "anyOf": [
                {"type": "string", "pattern": "^\\s*[0-9]*\\.?[0-9]+\\s*([kKmMgGtT][iI]?)?[bB]?\\s*$"},
                {"type": "integer", "minimum": 0}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Result<u64, &str>) {
        match (parse_bytes(input), expect) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{input}: {got}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn sizes() {
        check("512M", Ok(512_000_000));
        check("8G", Ok(8_000_000_000));
        check("8g", Ok(8_000_000_000));
        check("8GB", Ok(8_000_000_000));
        check("4Gi", Ok(4 << 30));
        check("4GiB", Ok(4 << 30));
        check("1.5G", Ok(1_500_000_000));
        check("100K", Ok(100_000));
        check("1Ki", Ok(1024));
        check("1048576", Ok(1_048_576));
        check("10B", Ok(10));
        check("0", Ok(0));
        check(" 2T ", Ok(2_000_000_000_000));
    }

    #[test]
    fn bad_sizes_name_the_value() {
        check("8X", Err("invalid memory size \"8X\": unknown unit \"x\""));
        check("", Err("empty memory size"));
        check("G", Err("no number"));
        check("-1G", Err("unknown unit"));
        check("1.2.3G", Err("invalid memory size"));
        check("99999999999999999999", Err("too large"));
        check("99999999999T", Err("too large"));
    }

    #[test]
    fn equal_by_bytes_and_round_trip_text() {
        assert_eq!(
            Memory::parse("8G").unwrap(),
            Memory::from_bytes(8_000_000_000)
        );
        let m: Memory = serde_json::from_str("\"4Gi\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"4Gi\"");
        let m: Memory = serde_json::from_str("1024").unwrap();
        assert_eq!(m.bytes(), 1024);
        assert!(serde_json::from_str::<Memory>("\"lots\"").is_err());
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_bytes(8_000_000_000), "8G");
        assert_eq!(format_bytes(1_500_000_000), "1.5G");
        assert_eq!(format_bytes(512), "512");
    }
}
