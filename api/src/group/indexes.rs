//! The index grammar of a task group: comma-separated numbers and inclusive ranges,
//! `"0-99"`, `"0-9,20,30-32"`, each index at most once, as Slurm's `--array` writes them.
//! The CLI's `--array 0-9%3` adds Slurm's `%N` for the parallelism ([`parse_array_flag`]).

/// The most members one group may have.
pub const MAX_MEMBERS: usize = 100_000;
/// The largest index; keeps member names (`<group>-<index>`) short.
pub const MAX_INDEX: u32 = 999_999;

/// The indexes of `text`, ascending. Errors name the bad part and what was expected.
pub fn parse_indexes(text: &str) -> Result<Vec<u32>, String> {
    let expected =
        "expected comma-separated indexes and inclusive ranges, e.g. \"0-99\" or \"0-9,20,30-32\"";
    if text.trim().is_empty() {
        return Err(format!("{text:?} holds no index: {expected}"));
    }
    let mut all = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let number = |s: &str| -> Result<u32, String> {
            let n: u32 = s.trim().parse().map_err(|_| {
                format!("{part:?} in {text:?} is not an index or range: {expected}")
            })?;
            if n > MAX_INDEX {
                return Err(format!(
                    "index {n} in {text:?} is above the largest allowed index {MAX_INDEX}"
                ));
            }
            Ok(n)
        };
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (number(from)?, number(to)?);
                if from > to {
                    return Err(format!(
                        "range {part:?} in {text:?} runs backwards: write the lower index first ({to}-{from})"
                    ));
                }
                if all.len() + (to - from) as usize + 1 > MAX_MEMBERS {
                    return Err(too_many(text));
                }
                all.extend(from..=to);
            }
            None => all.push(number(part)?),
        }
        if all.len() > MAX_MEMBERS {
            return Err(too_many(text));
        }
    }
    all.sort_unstable();
    if let Some(w) = all.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!(
            "index {} appears twice in {text:?}: give each index once",
            w[0]
        ));
    }
    Ok(all)
}

fn too_many(text: &str) -> String {
    format!("{text:?} names more than {MAX_MEMBERS} indexes, the most one group may have")
}

/// The indexes as the grammar writes them, ranges compressed: `0-3,7,9-10`; empty for none.
pub fn format_indexes(indexes: impl IntoIterator<Item = u32>) -> String {
    let mut sorted: Vec<u32> = indexes.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// The indexes of a status field written by [`format_indexes`]; empty text is none.
pub fn parse_recorded(text: &str) -> Vec<u32> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    parse_indexes(text).unwrap_or_default()
}

/// Splits the CLI's `--array INDEXES[%PARALLELISM]` (Slurm's form): the index text,
/// checked, and the parallelism when given.
pub fn parse_array_flag(text: &str) -> Result<(String, Option<u32>), String> {
    let (indexes, limit) = match text.split_once('%') {
        Some((indexes, limit)) => {
            let n: u32 = limit.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!(
                    "{limit:?} after % in {text:?} is not a parallelism: expected a whole number of at least 1, e.g. 0-9%3"
                )
            })?;
            (indexes, Some(n))
        }
        None => (text, None),
    };
    parse_indexes(indexes)?;
    Ok((indexes.trim().to_string(), limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> String {
        let v = parse_indexes(text).unwrap();
        let shown: Vec<String> = v.iter().map(u32::to_string).collect();
        shown.join(" ")
    }

    fn err(text: &str) -> String {
        parse_indexes(text).unwrap_err()
    }

    #[test]
    fn index_cases() {
        assert_eq!(ok("0-3"), "0 1 2 3");
        assert_eq!(ok("7"), "7");
        assert_eq!(ok("0-1,5, 9-10"), "0 1 5 9 10");
        assert_eq!(ok("30-32,2"), "2 30 31 32");
        assert_eq!(parse_indexes("0-9999").unwrap().len(), 10_000);
        assert!(err("").contains("holds no index"));
        assert!(err("a-3").contains("\"a-3\" in \"a-3\" is not an index or range"));
        assert!(err("5-2").contains("runs backwards: write the lower index first (2-5)"));
        assert!(err("1,1").contains("index 1 appears twice"));
        assert!(err("0-5,3").contains("index 3 appears twice"));
        assert!(err("1000000").contains("above the largest allowed index 999999"));
        assert!(err("0-999999").contains("more than 100000 indexes"));
        assert!(err("-1").contains("not an index or range"));
    }

    #[test]
    fn formatting_compresses_ranges_and_round_trips() {
        assert_eq!(format_indexes([3, 0, 1, 2, 7, 9, 10]), "0-3,7,9-10");
        assert_eq!(format_indexes([]), "");
        assert_eq!(parse_recorded("0-3,7"), [0, 1, 2, 3, 7]);
        assert!(parse_recorded("").is_empty());
    }

    #[test]
    fn array_flag_cases() {
        assert_eq!(parse_array_flag("0-9%3"), Ok(("0-9".into(), Some(3))));
        assert_eq!(parse_array_flag("1,4"), Ok(("1,4".into(), None)));
        assert!(
            parse_array_flag("0-9%0")
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(
            parse_array_flag("0-9%x")
                .unwrap_err()
                .contains("\"x\" after %")
        );
        assert!(
            parse_array_flag("x%2")
                .unwrap_err()
                .contains("not an index")
        );
    }
}
