//! The detail view of a task group (`describe tg NAME`, `task status GROUP`): its template,
//! indexes and limits, the members per phase, the failed members and the conditions.

use std::fmt::Write as _;

use kohakuriver_api::group::TaskGroup;
use kohakuriver_api::{Timestamp, columns};

use crate::cmd::describe::{Section, conditions, metadata, shell_words};
use crate::output::Table;

/// The detail view of a group.
pub fn describe_group(group: &TaskGroup, now: Timestamp) -> String {
    let mut s = Section::new();
    metadata(&mut s, &group.metadata, now);
    let spec = &group.spec;
    s.heading("Spec");
    s.indent = 2;
    s.line("Indexes", &spec.indexes);
    s.line(
        "Parallelism",
        spec.parallelism
            .map_or_else(|| "all".to_string(), |p| p.to_string()),
    );
    s.line(
        "Failure policy",
        spec.failure_policy.as_ref().map_or_else(
            || "keep going".to_string(),
            |p| format!("stop after {} failures", p.max_failures),
        ),
    );
    s.line("Desired state", format!("{:?}", spec.state));
    s.line("Command", shell_words(&spec.template.spec.command));
    s.map("Member labels", &spec.template.metadata.labels);
    s.indent = 0;
    let st = &group.status;
    s.heading("Status");
    s.indent = 2;
    s.line("State", columns::group_status(group));
    s.line("Members", format!("{} ({})", st.total, st.counts.summary()));
    s.when("Started", st.started_at, now);
    s.when("Finished", st.finished_at, now);
    s.indent = 0;
    if !st.failed_members.is_empty() {
        s.heading("Failed members");
        let mut t = Table::new(&["INDEX", "TASK", "PHASE", "EXIT", "REASON"]);
        for m in &st.failed_members {
            t.push(vec![
                m.index.to_string(),
                m.name.clone(),
                m.phase.to_string(),
                m.exit_code
                    .map_or_else(|| "-".to_string(), |c| c.to_string()),
                m.reason.clone().unwrap_or_else(|| "-".to_string()),
            ]);
        }
        for line in t.render().lines() {
            let _ = writeln!(s.out, "  {line}");
        }
    }
    conditions(&mut s, &st.conditions, now);
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::group::FailedMember;
    use kohakuriver_api::{Task, TaskPhase};

    #[test]
    fn shows_counts_and_failed_members() {
        let mut g = TaskGroup::new("sweep", Task::test("x").spec, "0-9");
        g.spec.parallelism = Some(3);
        g.status.total = 10;
        g.status.counts.running = 3;
        g.status.counts.failed = 1;
        g.status.counts.not_created = 6;
        g.status.failed_members = vec![FailedMember {
            index: 4,
            name: "sweep-4".into(),
            phase: TaskPhase::Failed,
            exit_code: Some(2),
            reason: Some("Error".into()),
            finished_at: None,
        }];
        let text = describe_group(&g, chrono::Utc::now());
        assert!(text.contains("Parallelism:  3"), "{text}");
        assert!(
            text.contains("10 (3 running, 1 failed, 6 not created)"),
            "{text}"
        );
        assert!(text.contains("sweep-4"), "{text}");
        assert!(text.contains("Failed members:"), "{text}");
    }
}
