//! Field ownership for server-side apply, as Kubernetes keeps it in `metadata.managedFields`.
//!
//! Each writer (a field manager: `kubectl`, `kubectl-edit`, `kohakuriver`, …) owns the fields
//! it set. An apply (`PATCH` with `application/apply-patch+yaml`) declares the whole set of
//! fields its manager wants: changing a field another manager owns to another value is a
//! conflict unless forced; fields the manager applied before and leaves out now are removed
//! unless someone else owns them too. Any other write (an `Update`) takes ownership of the
//! fields it changed, away from everyone else, and never conflicts.
//!
//! Only `spec`, `metadata.labels` and `metadata.annotations` are managed; status is written by
//! the system through its own subresource and never applied. Lists are atomic (one field), as
//! for a custom resource without list markers. Everything here is a pure function of JSON
//! values, the stored entries and `now`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::meta::{ManagedFieldsEntry, ManagedOperation, Timestamp};

/// A field's path from the object's root, e.g. `["spec", "priority"]`.
pub type FieldPath = Vec<String>;

/// A set of fields.
pub type FieldSet = BTreeSet<FieldPath>;

/// The parts of an object that field management covers.
const MANAGED_ROOTS: [&[&str]; 3] = [
    &["spec"],
    &["metadata", "labels"],
    &["metadata", "annotations"],
];

/// A field written the way Kubernetes prints it in conflicts: `.spec.priority`,
/// `.metadata.labels.team`.
pub fn display_path(path: &[String]) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

/// The leaf fields an object sets within the managed parts. Objects are descended into
/// (an empty one sets nothing), `null` sets nothing, and lists and scalars are leaves.
pub fn field_set(object: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    for root in MANAGED_ROOTS {
        let path: FieldPath = root.iter().map(|s| s.to_string()).collect();
        if let Some(value) = lookup(object, &path) {
            leaves(value, &mut path.clone(), &mut out);
        }
    }
    out
}

fn leaves(value: &Value, path: &mut FieldPath, out: &mut FieldSet) {
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (key, child) in map {
                path.push(key.clone());
                leaves(child, path, out);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at `path`, if any.
pub fn lookup<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(object, |v, key| v.as_object()?.get(key))
}

/// Sets the value at `path`, making the objects on the way.
fn put(object: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut here = object;
    for key in parents {
        if !here.is_object() {
            *here = Value::Object(Map::new());
        }
        here = here
            .as_object_mut()
            .map(|m| m.entry(key.clone()).or_insert(Value::Null))
            .unwrap_or_else(|| unreachable!("made an object above"));
    }
    if !here.is_object() {
        *here = Value::Object(Map::new());
    }
    if let Some(map) = here.as_object_mut() {
        map.insert(last.clone(), value);
    }
}

/// Removes the value at `path`, if any.
fn remove(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut here = object;
    for key in parents {
        match here.as_object_mut().and_then(|m| m.get_mut(key)) {
            Some(next) => here = next,
            None => return,
        }
    }
    if let Some(map) = here.as_object_mut() {
        map.remove(last);
    }
}

/// A field set in the `FieldsV1` shape: `{"f:spec": {"f:priority": {}}}`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Value::Object(Map::new());
    for path in set {
        let keys: Vec<String> = path.iter().map(|p| format!("f:{p}")).collect();
        put(&mut root, &keys, Value::Object(Map::new()));
    }
    root
}

/// Reads a `FieldsV1` set. A member with no `f:` children is a leaf; `.` (the node itself)
/// is implied by its children; list-item keys (`k:`, `v:`, `i:`) make their list one field,
/// as lists are atomic here.
pub fn from_fields_v1(fields: &Value) -> FieldSet {
    fn walk(node: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        let Some(map) = node.as_object() else {
            return;
        };
        let mut children = false;
        for (key, child) in map {
            if let Some(name) = key.strip_prefix("f:") {
                children = true;
                path.push(name.to_string());
                walk(child, path, out);
                path.pop();
            }
        }
        if !children && !path.is_empty() {
            out.insert(path.clone());
        }
    }
    let mut out = FieldSet::new();
    walk(fields, &mut Vec::new(), &mut out);
    out
}

/// One field an apply would change although another manager owns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldConflict {
    /// The owner, printed as Kubernetes does: `"kubectl-edit" using kohakuriver/v1 at …`
    /// for an update, `"other"` for an apply.
    pub manager: String,
    /// The field: `.spec.priority`.
    pub field: String,
}

/// The message of a refused apply, word for word as kube-apiserver writes it.
pub fn conflict_message(conflicts: &[FieldConflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager, only.field
        );
    }
    let managers: BTreeSet<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
    let mut lines = Vec::new();
    for manager in managers {
        lines.push(format!("conflicts with {manager}:"));
        for c in conflicts.iter().filter(|c| c.manager == manager) {
            lines.push(format!("- {}", c.field));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// A manager as kube-apiserver names it in a conflict.
fn print_manager(entry: &ManagedFieldsEntry) -> String {
    let mut out = format!("{:?}", entry.manager);
    if let Some(sub) = &entry.subresource {
        out.push_str(&format!(" with subresource {sub:?}"));
    }
    if entry.operation == ManagedOperation::Update {
        out.push_str(&format!(" using {}", entry.api_version));
        if let Some(time) = entry.time {
            out.push_str(&format!(
                " at {}",
                time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
    }
    out
}

/// Who is writing, and how.
#[derive(Clone, Copy, Debug)]
pub struct Writer<'a> {
    /// The field manager.
    pub manager: &'a str,
    /// The API version of the request.
    pub api_version: &'a str,
    /// The time of the write.
    pub now: Timestamp,
}

impl Writer<'_> {
    fn is(&self, entry: &ManagedFieldsEntry, operation: ManagedOperation) -> bool {
        entry.manager == self.manager && entry.operation == operation && entry.subresource.is_none()
    }

    fn entry(&self, operation: ManagedOperation, set: &FieldSet) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: self.manager.to_string(),
            operation,
            api_version: self.api_version.to_string(),
            time: Some(self.now),
            fields_type: "FieldsV1".to_string(),
            fields_v1: to_fields_v1(set),
            subresource: None,
        }
    }
}

/// What an apply decided: the object (as JSON) and its new managed fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    /// The object after the apply; server-owned fields as they were in `live`.
    pub object: Value,
    /// The new `metadata.managedFields`.
    pub managed_fields: Vec<ManagedFieldsEntry>,
}

/// Decides a server-side apply of `config` by `writer` onto `live` (none: a create).
///
/// Conflicts are the fields of `config` that another manager owns and whose live value
/// differs; without `force` they refuse the apply (sorted by manager, then field), with it
/// the applier takes them over. Fields the applier applied before and leaves out now are
/// removed unless another manager owns them. A field applied with the value it already has
/// becomes shared.
pub fn apply(
    live: Option<&Value>,
    managed: &[ManagedFieldsEntry],
    config: &Value,
    writer: Writer<'_>,
    force: bool,
) -> Result<Applied, Vec<FieldConflict>> {
    let wanted = field_set(config);
    let mut owners: Vec<(ManagedFieldsEntry, FieldSet)> = managed
        .iter()
        .map(|e| (e.clone(), from_fields_v1(&e.fields_v1)))
        .collect();
    let mine = owners
        .iter()
        .position(|(e, _)| writer.is(e, ManagedOperation::Apply));
    let before = mine.map(|i| owners[i].1.clone()).unwrap_or_default();

    let live_value = |p: &FieldPath| live.and_then(|l| lookup(l, p));
    let mut conflicts = Vec::new();
    for (i, (entry, owned)) in owners.iter_mut().enumerate() {
        if Some(i) == mine {
            continue;
        }
        let taken: Vec<FieldPath> = owned
            .intersection(&wanted)
            .filter(|p| live_value(p) != lookup(config, p))
            .cloned()
            .collect();
        for path in taken {
            conflicts.push(FieldConflict {
                manager: print_manager(entry),
                field: display_path(&path),
            });
            owned.remove(&path);
        }
    }
    if !conflicts.is_empty() && !force {
        conflicts.sort_by(|a, b| (&a.manager, &a.field).cmp(&(&b.manager, &b.field)));
        return Err(conflicts);
    }

    let mut object = match live {
        Some(live) => live.clone(),
        None => config.clone(),
    };
    for dropped in before.difference(&wanted) {
        let shared = owners
            .iter()
            .enumerate()
            .any(|(i, (_, owned))| Some(i) != mine && owned.contains(dropped));
        if !shared {
            remove(&mut object, dropped);
        }
    }
    for path in &wanted {
        if let Some(value) = lookup(config, path) {
            put(&mut object, path, value.clone());
        }
    }

    let changed = live.is_none_or(|l| !same(l, &object));
    let mut entries = Vec::new();
    for (i, (entry, owned)) in owners.into_iter().enumerate() {
        if Some(i) == mine {
            if wanted == before && !changed {
                entries.push(entry);
            } else if !wanted.is_empty() {
                entries.push(writer.entry(ManagedOperation::Apply, &wanted));
            }
        } else if !owned.is_empty() {
            let mut entry = entry;
            entry.fields_v1 = to_fields_v1(&owned);
            entries.push(entry);
        }
    }
    if mine.is_none() && !wanted.is_empty() {
        entries.push(writer.entry(ManagedOperation::Apply, &wanted));
    }
    Ok(Applied {
        object,
        managed_fields: entries,
    })
}

/// True when two objects agree on every managed field.
fn same(a: &Value, b: &Value) -> bool {
    let fields: FieldSet = field_set(a).union(&field_set(b)).cloned().collect();
    fields.iter().all(|p| lookup(a, p) == lookup(b, p))
}

/// The managed fields after a write that is not an apply (create, replace, merge patch):
/// `writer` takes the fields it changed (set or removed) from every other manager and owns
/// those it set. Nothing changes when the managed fields of `old` and `new` agree.
pub fn record_update(
    old: Option<&Value>,
    new: &Value,
    managed: &[ManagedFieldsEntry],
    writer: Writer<'_>,
) -> Vec<ManagedFieldsEntry> {
    let after = field_set(new);
    let before = old.map(field_set).unwrap_or_default();
    let set: FieldSet = after
        .iter()
        .filter(|p| old.and_then(|o| lookup(o, p)) != lookup(new, p))
        .cloned()
        .collect();
    let removed: FieldSet = before.difference(&after).cloned().collect();
    if set.is_empty() && removed.is_empty() {
        return managed.to_vec();
    }
    let mut entries = Vec::new();
    let mut mine: Option<FieldSet> = None;
    for entry in managed {
        let mut owned = from_fields_v1(&entry.fields_v1);
        owned.retain(|p| !removed.contains(p));
        if writer.is(entry, ManagedOperation::Update) {
            mine = Some(owned);
            continue;
        }
        owned.retain(|p| !set.contains(p));
        if !owned.is_empty() {
            let mut entry = entry.clone();
            entry.fields_v1 = to_fields_v1(&owned);
            entries.push(entry);
        }
    }
    let mut mine = mine.unwrap_or_default();
    mine.extend(set);
    if !mine.is_empty() {
        entries.push(writer.entry(ManagedOperation::Update, &mine));
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-01-02T03:04:05Z".parse().unwrap()
    }

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "kohakuriver/v1",
            now: now(),
        }
    }

    fn task(spec: Value) -> Value {
        json!({"apiVersion": "kohakuriver/v1", "kind": "Task",
               "metadata": {"name": "t", "uid": "u1"}, "spec": spec})
    }

    /// The managed fields as `manager/Operation: .a.b .c` lines, one per entry.
    fn owners(entries: &[ManagedFieldsEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| {
                let fields: Vec<String> = from_fields_v1(&e.fields_v1)
                    .iter()
                    .map(|p| display_path(p))
                    .collect();
                format!("{}/{:?}: {}", e.manager, e.operation, fields.join(" "))
            })
            .collect()
    }

    #[test]
    fn fields_v1_round_trips_and_reads_kubernetes_shapes() {
        let set = field_set(&json!({"metadata": {"name": "x", "labels": {"a": "1"}},
            "spec": {"command": ["x"], "resources": {"cpu": 2}, "placement": {}, "image": null}}));
        let fields = to_fields_v1(&set);
        assert_eq!(
            fields,
            json!({"f:metadata": {"f:labels": {"f:a": {}}},
                   "f:spec": {"f:command": {}, "f:resources": {"f:cpu": {}}}})
        );
        assert_eq!(from_fields_v1(&fields), set);
        let kube = json!({"f:metadata": {"f:labels": {".": {}, "f:a": {}}},
            "f:spec": {"f:command": {"k:{\"x\":1}": {".": {}}}}});
        assert_eq!(
            from_fields_v1(&kube),
            set.iter()
                .filter(|p| p[1] != "resources")
                .cloned()
                .collect()
        );
    }

    #[test]
    fn apply_creates_and_owns_what_it_sets() {
        let config = task(json!({"command": ["echo"], "priority": 3}));
        let out = apply(None, &[], &config, writer("kubectl"), false).unwrap();
        assert_eq!(out.object, config);
        assert_eq!(
            owners(&out.managed_fields),
            ["kubectl/Apply: .spec.command .spec.priority"]
        );
        assert_eq!(out.managed_fields[0].time, Some(now()));
    }

    #[test]
    fn apply_of_the_same_config_changes_nothing() {
        let config = task(json!({"command": ["echo"]}));
        let first = apply(None, &[], &config, writer("kubectl"), false).unwrap();
        let later = Writer {
            now: "2027-01-01T00:00:00Z".parse().unwrap(),
            ..writer("kubectl")
        };
        let again = apply(
            Some(&first.object),
            &first.managed_fields,
            &config,
            later,
            false,
        )
        .unwrap();
        assert_eq!(again, first);
    }

    #[test]
    fn apply_conflicts_on_a_field_another_manager_set_differently() {
        let live = task(json!({"command": ["echo"], "priority": 1}));
        let managed = record_update(None, &live, &[], writer("kubectl-edit"));
        let config = task(json!({"command": ["echo"], "priority": 5}));
        let e = apply(Some(&live), &managed, &config, writer("kubectl"), false).unwrap_err();
        assert_eq!(
            e,
            [FieldConflict {
                manager: "\"kubectl-edit\" using kohakuriver/v1 at 2026-01-02T03:04:05Z".into(),
                field: ".spec.priority".into()
            }]
        );
        assert_eq!(
            conflict_message(&e),
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using kohakuriver/v1 at 2026-01-02T03:04:05Z: .spec.priority"
        );
        // The same value is no conflict: the field becomes shared.
        let same = task(json!({"command": ["echo"], "priority": 1}));
        let out = apply(Some(&live), &managed, &same, writer("kubectl"), false).unwrap();
        assert_eq!(
            owners(&out.managed_fields),
            [
                "kubectl-edit/Update: .spec.command .spec.priority",
                "kubectl/Apply: .spec.command .spec.priority"
            ]
        );
    }

    #[test]
    fn forced_apply_takes_the_field_over() {
        let live = task(json!({"command": ["echo"], "priority": 1}));
        let managed = record_update(None, &live, &[], writer("kubectl-edit"));
        let config = task(json!({"command": ["echo"], "priority": 5}));
        let out = apply(Some(&live), &managed, &config, writer("kubectl"), true).unwrap();
        assert_eq!(out.object["spec"]["priority"], 5);
        assert_eq!(
            owners(&out.managed_fields),
            [
                "kubectl-edit/Update: .spec.command",
                "kubectl/Apply: .spec.command .spec.priority"
            ]
        );
    }

    #[test]
    fn many_conflicts_are_grouped_by_manager() {
        let c = |m: &str, f: &str| FieldConflict {
            manager: format!("{m:?}"),
            field: f.into(),
        };
        assert_eq!(
            conflict_message(&[c("a", ".spec.x"), c("a", ".spec.y"), c("b", ".spec.z")]),
            "Apply failed with 3 conflicts: conflicts with \"a\":\n- .spec.x\n- .spec.y\nconflicts with \"b\":\n- .spec.z"
        );
    }

    #[test]
    fn fields_dropped_from_the_config_go_unless_another_owns_them() {
        let mut config = task(json!({"command": ["echo"], "priority": 3, "retries": 2}));
        config["metadata"]["labels"] = json!({"a": "1", "b": "2"});
        let first = apply(None, &[], &config, writer("kubectl"), false).unwrap();
        // Someone else also sets retries to the same value: now shared.
        let shared = apply(
            Some(&first.object),
            &first.managed_fields,
            &task(json!({"retries": 2})),
            writer("other"),
            false,
        )
        .unwrap();
        let mut smaller = task(json!({"command": ["echo"]}));
        smaller["metadata"]["labels"] = json!({"a": "1"});
        let out = apply(
            Some(&shared.object),
            &shared.managed_fields,
            &smaller,
            writer("kubectl"),
            false,
        )
        .unwrap();
        assert_eq!(
            out.object["spec"],
            json!({"command": ["echo"], "retries": 2})
        );
        assert_eq!(out.object["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(out.object["metadata"]["uid"], "u1");
        assert_eq!(
            owners(&out.managed_fields),
            [
                "kubectl/Apply: .metadata.labels.a .spec.command",
                "other/Apply: .spec.retries"
            ]
        );
    }

    #[test]
    fn an_update_takes_the_fields_it_changes() {
        let live = task(json!({"command": ["echo"], "priority": 1}));
        let applied = apply(None, &[], &live, writer("kubectl"), false).unwrap();
        let mut new = live.clone();
        new["spec"]["priority"] = json!(5);
        new["metadata"]["annotations"] = json!({"x": "y"});
        let managed = record_update(
            Some(&live),
            &new,
            &applied.managed_fields,
            writer("kubectl-edit"),
        );
        assert_eq!(
            owners(&managed),
            [
                "kubectl/Apply: .spec.command",
                "kubectl-edit/Update: .metadata.annotations.x .spec.priority"
            ]
        );
        // Removing a field removes it from every owner; an unchanged write changes nothing.
        let mut fewer = new.clone();
        fewer["spec"] = json!({"priority": 5});
        let after = record_update(Some(&new), &fewer, &managed, writer("kohakuriver"));
        assert_eq!(
            owners(&after),
            ["kubectl-edit/Update: .metadata.annotations.x .spec.priority"]
        );
        assert_eq!(
            record_update(Some(&new), &new, &managed, writer("x")),
            managed
        );
    }
}
