//! A small line diff (longest common subsequence) printed in unified style, for `diff`.
//!
//! Manifests are short, so the quadratic table is fine and keeps this free of dependencies.

/// One line of a diff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// In both texts.
    Same(&'a str),
    /// Only in the old text.
    Removed(&'a str),
    /// Only in the new text.
    Added(&'a str),
}

/// The lines of `old` and `new` in order, marked as kept, removed or added.
pub fn diff_lines<'a>(old: &'a str, new: &'a str) -> Vec<Line<'a>> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j] = length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len() + b.len());
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(Line::Same(a[i]));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(Line::Removed(a[i]));
            i += 1;
        } else {
            out.push(Line::Added(b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| Line::Removed(l)));
    out.extend(b[j..].iter().map(|l| Line::Added(l)));
    out
}

/// A unified diff of `old` and `new` with `context` lines around each change, under
/// `--- old_label` / `+++ new_label` headers; `None` when the texts have the same lines.
pub fn unified(
    old: &str,
    new: &str,
    old_label: &str,
    new_label: &str,
    context: usize,
) -> Option<String> {
    let lines = diff_lines(old, new);
    let changed: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !matches!(l, Line::Same(_)))
        .map(|(i, _)| i)
        .collect();
    if changed.is_empty() {
        return None;
    }
    // Group changes whose context windows touch into hunks of line-index ranges.
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for &c in &changed {
        let start = c.saturating_sub(context);
        let end = (c + context + 1).min(lines.len());
        match hunks.last_mut() {
            Some(last) if start <= last.1 => last.1 = end,
            _ => hunks.push((start, end)),
        }
    }
    let mut out = format!("--- {old_label}\n+++ {new_label}\n");
    for (start, end) in hunks {
        let (old_start, new_start) = positions(&lines[..start]);
        let (old_len, new_len) = positions(&lines[start..end]);
        out.push_str(&format!(
            "@@ -{},{old_len} +{},{new_len} @@\n",
            old_start + 1,
            new_start + 1
        ));
        for line in &lines[start..end] {
            match line {
                Line::Same(l) => out.push_str(&format!(" {l}\n")),
                Line::Removed(l) => out.push_str(&format!("-{l}\n")),
                Line::Added(l) => out.push_str(&format!("+{l}\n")),
            }
        }
    }
    Some(out)
}

/// How many old and new lines a run of diff lines covers.
fn positions(lines: &[Line<'_>]) -> (usize, usize) {
    lines.iter().fold((0, 0), |(o, n), l| match l {
        Line::Same(_) => (o + 1, n + 1),
        Line::Removed(_) => (o + 1, n),
        Line::Added(_) => (o, n + 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_has_no_diff() {
        assert_eq!(unified("a\nb\n", "a\nb\n", "x", "y", 3), None);
    }

    #[test]
    fn one_change_with_context() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let new = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
        assert_eq!(
            unified(old, new, "live", "applied", 1).unwrap(),
            "--- live\n+++ applied\n@@ -4,3 +4,3 @@\n 4\n-5\n+five\n 6\n"
        );
    }

    #[test]
    fn additions_to_empty_and_separate_hunks() {
        assert_eq!(
            unified("", "a\nb\n", "live", "applied", 3).unwrap(),
            "--- live\n+++ applied\n@@ -1,0 +1,2 @@\n+a\n+b\n"
        );
        let old = "a\n1\n2\n3\n4\n5\nb\n";
        let new = "A\n1\n2\n3\n4\n5\nB\n";
        let d = unified(old, new, "o", "n", 1).unwrap();
        assert_eq!(d.matches("@@ -").count(), 2, "{d}");
    }

    #[test]
    fn lcs_keeps_common_lines() {
        let d = diff_lines("a\nb\nc\n", "a\nc\nd\n");
        assert_eq!(
            d,
            [
                Line::Same("a"),
                Line::Removed("b"),
                Line::Same("c"),
                Line::Added("d")
            ]
        );
    }
}
