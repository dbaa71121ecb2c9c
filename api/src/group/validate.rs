//! Validation of a `TaskGroup` as a user writes it, and the fields that are fixed once it
//! has started.
//!
//! The template is checked by validating the member the group would make for its largest
//! index ([`crate::group::member::member_task`]) with the task rules, the field paths moved
//! under `spec.template`: one set of task rules, and a member name that would be too long
//! is found before any member exists.

use crate::group::indexes::parse_indexes;
use crate::group::member::member_task;
use crate::group::{GROUP_ENV, INDEX_ENV, TaskGroup};
use crate::validation::{
    FieldError, check_dns_label, check_labels, check_metadata_size, type_errors, validate_task,
};

/// Field errors of a group's metadata and spec; empty when it is valid.
pub fn validate_group(group: &TaskGroup) -> Vec<FieldError> {
    let mut errors = Vec::new();
    errors.extend(type_errors(&group.api_version, &group.kind, "TaskGroup"));
    let name = &group.metadata.name;
    let name_ok = match check_dns_label(name) {
        Ok(()) => true,
        Err(e) => {
            errors.push(FieldError::new("metadata.name", e));
            false
        }
    };
    check_labels(&mut errors, "metadata.labels", &group.metadata.labels, true);
    check_labels(
        &mut errors,
        "metadata.annotations",
        &group.metadata.annotations,
        false,
    );
    check_metadata_size(
        &mut errors,
        &group.metadata.labels,
        &group.metadata.annotations,
    );
    let indexes = match parse_indexes(&group.spec.indexes) {
        Ok(indexes) => indexes,
        Err(e) => {
            errors.push(FieldError::new("spec.indexes", e));
            Vec::new()
        }
    };
    if group.spec.parallelism == Some(0) {
        errors.push(FieldError::new(
            "spec.parallelism",
            "0 would run nothing: give at least 1, or leave it out to run every member at once",
        ));
    }
    if group
        .spec
        .failure_policy
        .as_ref()
        .is_some_and(|p| p.max_failures == 0)
    {
        errors.push(FieldError::new(
            "spec.failurePolicy.maxFailures",
            "0 would stop before anything ran: give at least 1, or leave failurePolicy out to keep going whatever fails",
        ));
    }
    for var in [INDEX_ENV, GROUP_ENV] {
        if group.spec.template.spec.env.contains_key(var) {
            errors.push(FieldError::new(
                format!("spec.template.spec.env.{var}"),
                format!("{var} is set by the group for each member; leave it out"),
            ));
        }
    }
    if !name_ok {
        return errors;
    }
    let largest = indexes.last().copied().unwrap_or(0);
    let member = member_task(group, largest);
    for e in validate_task(&member) {
        let field = if e.field == "metadata.name" {
            errors.push(FieldError::new(
                "metadata.name",
                format!(
                    "{name:?} is too long for its members' names: member {:?} would break the task name rule ({}); use a shorter group name",
                    member.metadata.name, e.message
                ),
            ));
            continue;
        } else if let Some(rest) = e.field.strip_prefix("metadata.") {
            format!("spec.template.metadata.{rest}")
        } else if let Some(rest) = e.field.strip_prefix("spec.") {
            format!("spec.template.spec.{rest}")
        } else {
            continue;
        };
        errors.push(FieldError::new(field, e.message));
    }
    errors
}

/// The spec fields of `new` that differ from `old` but are fixed once the group has started
/// (`status.startedAt`): the template and the indexes. Each error says what to do instead.
pub fn frozen_group_changes(old: &TaskGroup, new: &TaskGroup) -> Vec<FieldError> {
    if old.status.started_at.is_none() {
        return Vec::new();
    }
    let what_to_do = "cannot change once the group has started (its members are made from it); delete the group and apply it again, or apply the change under a new name";
    let mut errors = Vec::new();
    if old.spec.template != new.spec.template {
        errors.push(FieldError::new("spec.template", what_to_do));
    }
    if old.spec.indexes != new.spec.indexes {
        errors.push(FieldError::new("spec.indexes", what_to_do));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::FailurePolicy;
    use crate::task::TaskSpec;

    fn group(name: &str, indexes: &str) -> TaskGroup {
        let spec = TaskSpec {
            command: vec!["echo".into(), "$(KOHAKURIVER_ARRAY_INDEX)".into()],
            ..Default::default()
        };
        TaskGroup::new(name, spec, indexes)
    }

    fn fields(g: &TaskGroup) -> Vec<String> {
        validate_group(g)
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn validation_cases() {
        assert!(fields(&group("sweep", "0-99")).is_empty());
        let long = "a".repeat(60);
        let e = fields(&group(&long, "0-999"));
        assert!(e[0].contains("too long for its members' names"), "{e:?}");
        assert!(fields(&group(&long, "0-9")).is_empty());
        assert!(fields(&group("sweep", "9-0"))[0].starts_with("spec.indexes: range"));
        let mut g = group("sweep", "0-3");
        g.spec.parallelism = Some(0);
        g.spec.failure_policy = Some(FailurePolicy { max_failures: 0 });
        g.spec.template.spec.command.clear();
        g.spec
            .template
            .spec
            .env
            .insert(INDEX_ENV.into(), "1".into());
        g.spec
            .template
            .metadata
            .labels
            .insert("bad key!".into(), "x".into());
        let e = fields(&g);
        let has = |prefix: &str| e.iter().any(|m| m.starts_with(prefix));
        assert!(has("spec.parallelism: 0 would run nothing"), "{e:?}");
        assert!(has("spec.failurePolicy.maxFailures"), "{e:?}");
        assert!(has("spec.template.spec.command"), "{e:?}");
        assert!(
            has("spec.template.spec.env.KOHAKURIVER_ARRAY_INDEX"),
            "{e:?}"
        );
        assert!(has("spec.template.metadata.labels.bad key!"), "{e:?}");
        assert!(fields(&group("Bad_Name", "0"))[0].starts_with("metadata.name"));
    }

    #[test]
    fn template_and_indexes_freeze_once_started() {
        let old = group("sweep", "0-3");
        let mut new = old.clone();
        new.spec.indexes = "0-4".into();
        new.spec.parallelism = Some(2);
        assert!(frozen_group_changes(&old, &new).is_empty());
        let mut started = old.clone();
        started.status.started_at = Some(chrono::DateTime::UNIX_EPOCH);
        let e = frozen_group_changes(&started, &new);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].field, "spec.indexes");
        assert!(e[0].message.contains("delete the group and apply it again"));
        let mut only_parallelism = started.clone();
        only_parallelism.spec.parallelism = Some(9);
        assert!(frozen_group_changes(&started, &only_parallelism).is_empty());
    }
}
