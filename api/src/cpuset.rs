//! Cpuset lists as the kernel and Docker write them: `0-3,8,10-11`.

use std::collections::BTreeSet;

/// A set of logical CPU ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuSet(BTreeSet<u32>);

impl CpuSet {
    /// The empty set.
    pub fn new() -> CpuSet {
        CpuSet::default()
    }

    /// Parses `0-3,8,10-11` (whitespace and a trailing newline are tolerated; the empty
    /// string is the empty set).
    pub fn parse(text: &str) -> Result<CpuSet, String> {
        CpuSet::parse_bounded(text, u32::MAX)
    }

    /// Like [`CpuSet::parse`], refusing any id at or above `limit` before expanding a range,
    /// so an untrusted list cannot make a huge set.
    pub fn parse_bounded(text: &str, limit: u32) -> Result<CpuSet, String> {
        let too_big =
            |id: u32| format!("cpu id {id} in {text:?} is not below the limit of {limit}");
        let mut set = BTreeSet::new();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(CpuSet(set));
        }
        for part in trimmed.split(',') {
            let part = part.trim();
            let bad =
                || format!("invalid cpu list {text:?}: expected ids and ranges such as 0-3,8");
            match part.split_once('-') {
                Some((lo, hi)) => {
                    let lo: u32 = lo.trim().parse().map_err(|_| bad())?;
                    let hi: u32 = hi.trim().parse().map_err(|_| bad())?;
                    if lo > hi || hi - lo > 65_536 {
                        return Err(bad());
                    }
                    if hi >= limit {
                        return Err(too_big(hi));
                    }
                    set.extend(lo..=hi);
                }
                None => {
                    let id: u32 = part.parse().map_err(|_| bad())?;
                    if id >= limit {
                        return Err(too_big(id));
                    }
                    set.insert(id);
                }
            }
        }
        Ok(CpuSet(set))
    }

    /// Number of CPUs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `cpu` is in the set.
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }

    /// Adds one CPU.
    pub fn insert(&mut self, cpu: u32) {
        self.0.insert(cpu);
    }

    /// Removes one CPU.
    pub fn remove(&mut self, cpu: u32) {
        self.0.remove(&cpu);
    }

    /// The ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// True when the sets share a CPU.
    pub fn intersects(&self, other: &CpuSet) -> bool {
        self.0.iter().any(|c| other.0.contains(c))
    }

    /// The CPUs in either set.
    pub fn union(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.union(&other.0).copied().collect())
    }

    /// The CPUs in `self` but not in `other`.
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        CpuSet(iter.into_iter().collect())
    }
}

impl std::fmt::Display for CpuSet {
    /// Writes the shortest list: `0-3,8`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        let mut iter = self.0.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end = iter.next().unwrap_or(end);
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for text in ["", "0", "0-3", "0-3,8,10-11", "1,3,5"] {
            assert_eq!(CpuSet::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(CpuSet::parse("3,2,1,0\n").unwrap().to_string(), "0-3");
        assert_eq!(CpuSet::parse("0-1,1-2").unwrap().len(), 3);
    }

    #[test]
    fn rejects_garbage() {
        for text in ["a", "3-1", "1,,2", "-1", "0-999999"] {
            let err = CpuSet::parse(text).unwrap_err();
            assert!(err.contains(&format!("{text:?}")), "{err}");
        }
    }

    #[test]
    fn set_operations() {
        let a = CpuSet::parse("0-3").unwrap();
        let b = CpuSet::parse("3-5").unwrap();
        assert!(a.intersects(&b));
        assert_eq!(a.union(&b).to_string(), "0-5");
        assert_eq!(a.difference(&b).to_string(), "0-2");
    }
}
