//! Label selectors (`team=vision,env!=prod,tier in (a,b),!legacy,gpu`) and field selectors
//! (`status.node=mynode,status.phase!=Succeeded`), as in Kubernetes.

use std::collections::BTreeMap;

use crate::resource::Resource;

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value` (also true when the key is absent).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also true when the key is absent).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => !labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        }
    }
}

/// A parsed label selector: every requirement must hold. The empty selector matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// The requirements, all of which must hold.
    pub requirements: Vec<Requirement>,
}

const LABEL_GRAMMAR: &str =
    "expected comma-separated requirements such as a=b, a!=b, a in (x,y), a notin (x), a, !a";

impl LabelSelector {
    /// Parses a selector; the error names the bad requirement.
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(format!(
                    "invalid label selector {text:?}: empty requirement; {LABEL_GRAMMAR}"
                ));
            }
            requirements.push(parse_requirement(part).map_err(|why| {
                format!("invalid label selector {text:?}: {why}; {LABEL_GRAMMAR}")
            })?);
        }
        Ok(LabelSelector { requirements })
    }

    /// A selector of `key=value` pairs (a node selector).
    pub fn from_map(map: &BTreeMap<String, String>) -> LabelSelector {
        LabelSelector {
            requirements: map
                .iter()
                .map(|(k, v)| Requirement::Equals(k.clone(), v.clone()))
                .collect(),
        }
    }

    /// True when every requirement holds for these labels.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True when the selector has no requirement.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(Requirement::DoesNotExist(key.to_string()));
    }
    if let Some((k, v)) = part.split_once("!=") {
        let (k, v) = (k.trim(), v.trim());
        check_key(k)?;
        check_value(v)?;
        return Ok(Requirement::NotEquals(k.to_string(), v.to_string()));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        let (k, v) = (k.trim(), v.trim());
        check_key(k)?;
        check_value(v)?;
        return Ok(Requirement::Equals(k.to_string(), v.to_string()));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = words[0];
        let rest = words[1].trim();
        let (op, set) = if let Some(s) = rest.strip_prefix("notin") {
            ("notin", s)
        } else if let Some(s) = rest.strip_prefix("in") {
            ("in", s)
        } else {
            return Err(format!("{part:?} has an unknown operator"));
        };
        let set = set.trim();
        let inner = set
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(|| format!("{part:?}: the values must be in parentheses"))?;
        check_key(key)?;
        let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
        for v in &values {
            check_value(v)?;
        }
        return Ok(if op == "in" {
            Requirement::In(key.to_string(), values)
        } else {
            Requirement::NotIn(key.to_string(), values)
        });
    }
    check_key(part)?;
    Ok(Requirement::Exists(part.to_string()))
}

/// Checks a label key: an optional DNS prefix and `/`, then a name of at most 63 characters
/// of letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit.
pub fn check_key(key: &str) -> Result<(), String> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(is_dns_label) {
                return Err(format!("label key {key:?} has an invalid prefix"));
            }
            name
        }
        None => key,
    };
    if name.is_empty() || name.len() > 63 || !is_label_word(name) {
        return Err(format!(
            "label key {key:?} is invalid: expected at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks a label value: empty, or like a key's name part.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 || !is_label_word(value) {
        return Err(format!(
            "label value {value:?} is invalid: expected at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn is_label_word(s: &str) -> bool {
    let ok_inner = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    let first = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let last = s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    ok_inner && first && last
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// One field requirement: `path=value` or `path!=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    /// A selectable field path such as `status.node`.
    pub path: String,
    /// The value to compare with.
    pub value: String,
    /// True for `!=`.
    pub negated: bool,
}

impl FieldRequirement {
    fn holds(&self, actual: &str) -> bool {
        (actual == self.value) != self.negated
    }
}

/// What label and field selectors can see of one object: its labels and the values of its
/// kind's selectable fields, extracted once so that many selectors can be matched against
/// them without reading the object again (a watch hub judges every event for every
/// filtered watcher).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selectable {
    /// The object's labels.
    pub labels: BTreeMap<String, String>,
    /// Each of the kind's `SELECTABLE_FIELDS` with its value (`None` when unset).
    pub fields: Vec<(&'static str, Option<String>)>,
}

impl Selectable {
    /// Extracts what selectors see of `object`.
    pub fn of<R: Resource>(object: &R) -> Selectable {
        Selectable {
            labels: object.metadata().labels.clone(),
            fields: R::SELECTABLE_FIELDS
                .iter()
                .map(|path| (*path, object.field(path)))
                .collect(),
        }
    }

    /// The value of a selectable field; `None` when unset or not selectable.
    pub fn field(&self, path: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(p, _)| *p == path)
            .and_then(|(_, v)| v.as_deref())
    }

    /// True when both selectors hold.
    pub fn matches(&self, labels: &LabelSelector, fields: &FieldSelector) -> bool {
        labels.matches(&self.labels) && fields.matches_fields(self)
    }
}

/// A parsed field selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// The requirements.
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses a field selector for kind `R`, refusing fields that kind cannot select on.
    pub fn parse<R: Resource>(text: &str) -> Result<FieldSelector, String> {
        let mut requirements = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (path, value, negated) = if let Some((p, v)) = part.split_once("!=") {
                (p, v, true)
            } else if let Some((p, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (p, v, false)
            } else {
                return Err(format!(
                    "invalid field selector {text:?}: {part:?} is not path=value or path!=value"
                ));
            };
            let path = path.trim();
            if !R::SELECTABLE_FIELDS.contains(&path) {
                return Err(format!(
                    "invalid field selector {text:?}: {} has no selectable field {path:?} (supported: {})",
                    R::KIND,
                    R::SELECTABLE_FIELDS.join(", ")
                ));
            }
            requirements.push(FieldRequirement {
                path: path.to_string(),
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// True when every requirement holds for the object.
    pub fn matches<R: Resource>(&self, object: &R) -> bool {
        self.requirements
            .iter()
            .all(|r| r.holds(&object.field(&r.path).unwrap_or_default()))
    }

    /// True when every requirement holds for fields extracted before (see [`Selectable`]).
    pub fn matches_fields(&self, fields: &Selectable) -> bool {
        self.requirements
            .iter()
            .all(|r| r.holds(fields.field(&r.path).unwrap_or_default()))
    }

    /// The value required by an equality on `path`, if any (lets a store use an index).
    pub fn equality(&self, path: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.path == path && !r.negated)
            .map(|r| r.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Task;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(selector: &str, pairs: &[(&str, &str)], expect: bool) {
        let s = LabelSelector::parse(selector).unwrap();
        assert_eq!(s.matches(&labels(pairs)), expect, "{selector} on {pairs:?}");
    }

    #[test]
    fn extracted_fields_match_as_the_object_does() {
        let mut bound = Task::test("a");
        bound.metadata.labels = labels(&[("team", "vision")]);
        bound.status.node = Some("n1".into());
        let unbound = Task::test("b");
        let cases = [
            ("", ""),
            ("team=vision", ""),
            ("team!=vision", ""),
            ("", "status.node=n1"),
            ("", "status.node!=n1"),
            ("", "status.node="),
            ("", "metadata.name=a"),
            ("team=vision", "status.node=n2"),
            ("!team", "status.node!=n2"),
        ];
        for task in [&bound, &unbound] {
            let extracted = Selectable::of(task);
            for (l, f) in cases {
                let (l_sel, f_sel) = (
                    LabelSelector::parse(l).unwrap(),
                    FieldSelector::parse::<Task>(f).unwrap(),
                );
                assert_eq!(
                    extracted.matches(&l_sel, &f_sel),
                    l_sel.matches(&task.metadata.labels) && f_sel.matches(task),
                    "{l:?} {f:?} on {}",
                    task.metadata.name
                );
            }
        }
        assert_eq!(Selectable::of(&bound).field("status.node"), Some("n1"));
        assert_eq!(Selectable::of(&unbound).field("status.node"), Some(""));
        assert_eq!(Selectable::of(&bound).field("spec.image"), None);
    }

    #[test]
    fn label_selectors_match() {
        check("", &[], true);
        check("a=b", &[("a", "b")], true);
        check("a==b", &[("a", "c")], false);
        check("a!=b", &[], true);
        check("a!=b", &[("a", "b")], false);
        check("a in (x,y)", &[("a", "y")], true);
        check("a in (x, y)", &[("a", "z")], false);
        check("a notin (x)", &[], true);
        check("a notin (x)", &[("a", "x")], false);
        check("a", &[("a", "")], true);
        check("!a", &[("a", "1")], false);
        check("!a", &[], true);
        check("a=b,c in (d,e),!f", &[("a", "b"), ("c", "e")], true);
        check(
            "example.com/team=vision",
            &[("example.com/team", "vision")],
            true,
        );
    }

    #[test]
    fn bad_label_selectors_name_the_part() {
        for (text, want) in [
            ("a=b,", "empty requirement"),
            ("a in x,y", "must be in parentheses"),
            ("a foo (x)", "unknown operator"),
            ("-a=b", "label key \"-a\" is invalid"),
            ("a=b c", "label value \"b c\" is invalid"),
            ("Bad_/x=1", "invalid prefix"),
        ] {
            let e = LabelSelector::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn field_selectors() {
        let mut t = Task::new("t1", vec!["true".into()]);
        t.status.node = Some("n1".into());
        let s = FieldSelector::parse::<Task>("status.node=n1,status.phase!=Succeeded").unwrap();
        assert!(s.matches(&t));
        assert_eq!(s.equality("status.node"), Some("n1"));
        let s = FieldSelector::parse::<Task>("metadata.name=t2").unwrap();
        assert!(!s.matches(&t));
        let e = FieldSelector::parse::<Task>("spec.image=x").unwrap_err();
        assert!(e.contains("no selectable field \"spec.image\""), "{e}");
        let e = FieldSelector::parse::<Task>("status.node").unwrap_err();
        assert!(e.contains("not path=value"), "{e}");
    }
}
