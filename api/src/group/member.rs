//! A group's members: their names, and the task made from the template for one index.

use std::collections::BTreeMap;

use crate::group::{GROUP_ENV, GROUP_LABEL, INDEX_ENV, INDEX_LABEL, TaskGroup};
use crate::meta::{ObjectMeta, OwnerReference};
use crate::resource::Resource;
use crate::task::{Task, TaskStatus};

/// The name of member `index` of group `group`: `<group>-<index>`.
pub fn member_name(group: &str, index: u32) -> String {
    format!("{group}-{index}")
}

/// The index of `task` when it is a member of `group` (its owner reference names the
/// group's uid and its name is `<group>-<index>`), else `None`.
pub fn member_index(task: &Task, group: &TaskGroup) -> Option<u32> {
    let owner = task.metadata.owned_by(TaskGroup::KIND)?;
    if owner.name != group.metadata.name || Some(&owner.uid) != group.metadata.uid.as_ref() {
        return None;
    }
    let rest = task
        .metadata
        .name
        .strip_prefix(&group.metadata.name)?
        .strip_prefix('-')?;
    rest.parse().ok().filter(|i: &u32| i.to_string() == rest)
}

/// Expands `$(VAR)` in `text` from `vars`, by Kubernetes' rules: `$(NAME)` with `NAME` in
/// `vars` becomes its value; an unknown `$(NAME)` stays as written; `$$` is one literal `$`
/// (so `$$(NAME)` gives `$(NAME)` unexpanded); any other `$` stays.
pub fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The member task of `group` for `index`: the template's spec with the two variables in
/// its environment and expanded in its command (and in the values of its own `env`), the
/// template's labels and annotations plus the group and index labels, the group as owner
/// reference, and the group's owner as its owner.
pub fn member_task(group: &TaskGroup, index: u32) -> Task {
    let name = &group.metadata.name;
    let mut vars = group.spec.template.spec.env.clone();
    vars.insert(INDEX_ENV.to_string(), index.to_string());
    vars.insert(GROUP_ENV.to_string(), name.clone());
    let mut spec = group.spec.template.spec.clone();
    spec.command = spec.command.iter().map(|a| expand(a, &vars)).collect();
    for value in spec.env.values_mut() {
        *value = expand(value, &vars);
    }
    spec.env.insert(INDEX_ENV.to_string(), index.to_string());
    spec.env.insert(GROUP_ENV.to_string(), name.clone());
    let mut labels = group.spec.template.metadata.labels.clone();
    labels.insert(GROUP_LABEL.to_string(), name.clone());
    labels.insert(INDEX_LABEL.to_string(), index.to_string());
    Task {
        api_version: crate::API_VERSION.to_string(),
        kind: "Task".to_string(),
        metadata: ObjectMeta {
            name: member_name(name, index),
            labels,
            annotations: group.spec.template.metadata.annotations.clone(),
            owner: group.metadata.owner.clone(),
            owner_references: vec![OwnerReference {
                api_version: crate::API_VERSION.to_string(),
                kind: TaskGroup::KIND.to_string(),
                name: name.clone(),
                uid: group.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }],
            ..ObjectMeta::default()
        },
        spec,
        status: TaskStatus::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskSpec;

    fn vars() -> BTreeMap<String, String> {
        [("I", "7"), ("G", "sweep")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expansion_cases() {
        let cases = [
            ("$(I)", "7"),
            ("lr-$(I)-$(G)", "lr-7-sweep"),
            ("$(NOPE)", "$(NOPE)"),
            ("$$(I)", "$(I)"),
            ("$$$(I)", "$7"),
            ("cost $5", "cost $5"),
            ("$$", "$"),
            ("$(I", "$(I"),
            ("$", "$"),
            ("plain", "plain"),
            ("$()", "$()"),
            ("ünï $(I) ü", "ünï 7 ü"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &vars()), want, "{input}");
        }
    }

    fn group() -> TaskGroup {
        let spec = TaskSpec {
            command: vec!["echo".into(), "$(KOHAKURIVER_ARRAY_INDEX)".into()],
            ..Default::default()
        };
        let mut g = TaskGroup::new("sweep", spec, "0-3");
        g.metadata.uid = Some("u1".into());
        g.metadata.owner = Some("alice".into());
        g.spec
            .template
            .metadata
            .labels
            .insert("team".into(), "a".into());
        g
    }

    #[test]
    fn member_is_made_from_the_template() {
        let t = member_task(&group(), 2);
        assert_eq!(t.metadata.name, "sweep-2");
        assert_eq!(t.spec.command, ["echo", "2"]);
        assert_eq!(t.spec.env[INDEX_ENV], "2");
        assert_eq!(t.spec.env[GROUP_ENV], "sweep");
        assert_eq!(t.metadata.labels[GROUP_LABEL], "sweep");
        assert_eq!(t.metadata.labels["team"], "a");
        assert_eq!(t.metadata.owner.as_deref(), Some("alice"));
        assert_eq!(t.metadata.owner_references[0].uid, "u1");
        assert_eq!(member_index(&t, &group()), Some(2));
        assert!(crate::validation::validate_task(&t).is_empty());
    }

    #[test]
    fn member_index_needs_the_same_group() {
        let g = group();
        let t = member_task(&g, 3);
        let mut other = g.clone();
        other.metadata.uid = Some("u2".into());
        assert_eq!(member_index(&t, &other), None);
        let mut renamed = t.clone();
        renamed.metadata.name = "sweep-03".into();
        assert_eq!(member_index(&renamed, &g), None);
        assert_eq!(member_index(&Task::test("sweep-1"), &g), None);
    }
}
