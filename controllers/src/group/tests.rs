//! Case tables for [`plan_group`] and [`plan_orphans`].

use super::*;
use kohakuriver_api::group::FailurePolicy;
use kohakuriver_api::group::member::member_task;
use kohakuriver_api::meta::find_condition;

fn at(s: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(s, 0).unwrap()
}

/// A started group `g` of `indexes` with `parallelism`.
fn group(indexes: &str, parallelism: Option<u32>) -> TaskGroup {
    let mut g = TaskGroup::new("g", Task::test("x").spec, indexes);
    g.metadata.uid = Some("uid-g".into());
    g.metadata.generation = Some(1);
    g.spec.parallelism = parallelism;
    g.status.started_at = Some(at(0));
    g
}

/// Members of `g` by index and phase, e.g. `[(0, Running), (1, Failed)]`.
fn members(g: &TaskGroup, phases: &[(u32, TaskPhase)]) -> Vec<Task> {
    phases
        .iter()
        .map(|&(i, phase)| {
            let mut t = member_task(g, i);
            t.status.phase = phase;
            if phase == TaskPhase::Failed {
                t.status.exit_code = Some(3);
            }
            t
        })
        .collect()
}

/// `create 0,1 kill g-2 | counts | Complete Failed:Reason finished`.
fn show(g: &TaskGroup, phases: &[(u32, TaskPhase)], in_flight: &[u32]) -> String {
    let tasks = members(g, phases);
    let refs: Vec<&Task> = tasks.iter().collect();
    let flying: BTreeSet<u32> = in_flight.iter().copied().collect();
    let plan = plan_group(g, &refs, &flying, at(100));
    let list = |v: Vec<String>| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(",")
        }
    };
    let create = list(plan.create.iter().map(u32::to_string).collect());
    let kill = list(plan.kill.clone());
    let status = match &plan.status {
        None => "unchanged".to_string(),
        Some(s) => {
            let mut words = vec![s.counts.summary()];
            for c in ["Complete", "Failed"] {
                if let Some(cond) = find_condition(&s.conditions, c) {
                    words.push(format!("{c}:{}", cond.reason.clone().unwrap_or_default()));
                }
            }
            if s.finished_at.is_some() {
                words.push("finished".into());
            }
            words.join(" ")
        }
    };
    format!("create {create} kill {kill} | {status}")
}

/// (name, group, members by index and phase, indexes in flight, the plan shown).
type Case = (
    &'static str,
    TaskGroup,
    Vec<(u32, TaskPhase)>,
    Vec<u32>,
    &'static str,
);

#[test]
fn plan_cases() {
    use TaskPhase::*;
    let p3 = group("0-9", Some(3));
    let mut unstarted = p3.clone();
    unstarted.status.started_at = None;
    let mut policy = group("0-5", Some(2));
    policy.spec.failure_policy = Some(FailurePolicy { max_failures: 2 });
    let mut killed = group("0-3", None);
    killed.spec.state = GroupState::Killed;
    let cases: Vec<Case> = vec![
        (
            "not started: status first, no member",
            unstarted.clone(),
            vec![],
            vec![],
            "create - kill - | 10 not created",
        ),
        (
            "fresh: up to parallelism",
            p3.clone(),
            vec![],
            vec![],
            "create 0,1,2 kill - | 10 not created",
        ),
        (
            "in flight count against the limit",
            p3.clone(),
            vec![(0, Running)],
            vec![1, 2],
            "create - kill - | 1 running, 2 pending, 7 not created",
        ),
        (
            "a finished member frees one slot",
            p3.clone(),
            vec![(0, Succeeded), (1, Running), (2, Pending)],
            vec![],
            "create 3 kill - | 1 running, 1 pending, 1 succeeded, 7 not created",
        ),
        (
            "unknown still holds a slot",
            p3.clone(),
            vec![(0, Unknown), (1, Paused), (2, Assigned)],
            vec![],
            "create - kill - | 1 paused, 1 assigned, 1 unknown, 7 not created",
        ),
        (
            "default parallelism is all",
            group("0-3", None),
            vec![(0, Running)],
            vec![],
            "create 1,2,3 kill - | 1 running, 3 not created",
        ),
        (
            "lowered parallelism creates nothing, kills nothing",
            group("0-9", Some(1)),
            vec![(0, Running), (1, Running)],
            vec![],
            "create - kill - | 2 running, 8 not created",
        ),
        (
            "every member succeeded",
            group("0-1", Some(1)),
            vec![(0, Succeeded), (1, Succeeded)],
            vec![],
            "create - kill - | 2 succeeded Complete:AllSucceeded finished",
        ),
        (
            "finished with a failure",
            group("0-1", None),
            vec![(0, Succeeded), (1, Failed)],
            vec![],
            "create - kill - | 1 succeeded, 1 failed Failed:MembersFailed finished",
        ),
        (
            "one failure under maxFailures 2 keeps going",
            policy.clone(),
            vec![(0, Failed), (1, Running)],
            vec![],
            "create 2 kill - | 1 running, 1 failed, 4 not created",
        ),
        (
            "policy tripped: kill the rest, create none",
            policy.clone(),
            vec![(0, Failed), (1, Lost), (2, Running)],
            vec![],
            "create - kill g-2 | 1 running, 1 failed, 1 lost, 3 not created Failed:FailureLimit",
        ),
        (
            "policy tripped and drained: finished",
            policy.clone(),
            vec![(0, Failed), (1, Lost), (2, Killed)],
            vec![],
            "create - kill - | 1 failed, 1 killed, 1 lost, 3 not created Failed:FailureLimit finished",
        ),
        (
            "killed group: kill unfinished, create none",
            killed.clone(),
            vec![(0, Running), (1, Succeeded)],
            vec![],
            "create - kill g-0 | 1 running, 1 succeeded, 2 not created Failed:Killed",
        ),
    ];
    let mut retried = group("0-1", Some(1));
    retried.spec.template.spec.retries = 1;
    let cases = cases
        .into_iter()
        .chain([(
            "a failure with retries left holds its slot",
            retried.clone(),
            vec![(0, Failed)],
            vec![],
            "create - kill - | 1 pending, 1 not created",
        )])
        .collect::<Vec<_>>();
    for (name, g, phases, in_flight, want) in cases {
        assert_eq!(show(&g, &phases, &in_flight), want, "{name}");
    }
}

#[test]
fn only_members_of_this_uid_count() {
    let g = group("0-2", Some(1));
    let mut old = group("0-2", Some(1));
    old.metadata.uid = Some("uid-old".into());
    let stale = members(&old, &[(0, TaskPhase::Running)]);
    let refs: Vec<&Task> = stale.iter().collect();
    let plan = plan_group(&g, &refs, &BTreeSet::new(), at(1));
    assert_eq!(plan.create, vec![0]);
}

#[test]
fn a_settled_group_writes_nothing() {
    let g = group("0-1", None);
    let tasks = members(&g, &[(0, TaskPhase::Succeeded), (1, TaskPhase::Failed)]);
    let refs: Vec<&Task> = tasks.iter().collect();
    let first = plan_group(&g, &refs, &BTreeSet::new(), at(5));
    let mut settled = g.clone();
    settled.status = first.status.expect("a first status");
    let again = plan_group(&settled, &refs, &BTreeSet::new(), at(9));
    assert_eq!(again, GroupPlan::default());
    assert_eq!(settled.status.failed_members[0].name, "g-1");
    assert_eq!(settled.status.failed_members[0].exit_code, Some(3));
}

#[test]
fn finished_members_deleted_later_are_not_made_again() {
    let g = group("0-2", Some(1));
    let tasks = members(&g, &[(0, TaskPhase::Succeeded), (1, TaskPhase::Failed)]);
    let refs: Vec<&Task> = tasks.iter().collect();
    let first = plan_group(&g, &refs, &BTreeSet::new(), at(5));
    assert_eq!(first.create, vec![2]);
    let mut recorded = g.clone();
    recorded.status = first.status.expect("a status");
    assert_eq!(recorded.status.succeeded_indexes, "0");
    assert_eq!(recorded.status.failed_indexes, "1");
    // Both finished members are deleted (TTL): nothing is made again, the counts stay.
    let later = plan_group(&recorded, &[], &BTreeSet::new(), at(9));
    assert_eq!(later.create, vec![2]);
    let status = later.status.unwrap_or(recorded.status.clone());
    assert_eq!((status.counts.succeeded, status.counts.failed), (1, 1));
    assert_eq!(status.failed_members[0].name, "g-1");
}

#[test]
fn orphans_are_members_of_missing_groups() {
    let g = group("0-1", None);
    let mut gone = group("0-1", None);
    gone.metadata.name = "gone".into();
    let mut replaced = group("0-1", None);
    replaced.metadata.uid = Some("uid-old".into());
    let mut deleting = member_task(&gone, 1);
    deleting.metadata.deletion_timestamp = Some(at(1));
    let tasks = [
        member_task(&g, 0),
        member_task(&gone, 0),
        member_task(&replaced, 1),
        deleting,
        Task::test("plain"),
    ];
    let groups: HashMap<String, std::sync::Arc<TaskGroup>> =
        [("g".to_string(), std::sync::Arc::new(g))]
            .into_iter()
            .collect();
    let names: Vec<String> = plan_orphans(&groups, tasks.iter())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["gone-0", "g-1"]);
}
