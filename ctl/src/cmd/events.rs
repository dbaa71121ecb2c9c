//! `kohakuriver events [--for task/NAME|node/NAME] [-w] [-o wide|yaml|json]`: what happened
//! to tasks and nodes, oldest first by when it last happened; `-w` keeps printing events as
//! they are written or counted again, through the watch API. Also the Events section that
//! `describe task|node` ends with, as kubectl's.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::{Context, bail};
use futures::StreamExt;
use kohakuriver_api::{Event, Node, Resource, Task, TaskGroup, Timestamp};
use kohakuriver_client::watcher::Event as Change;
use kohakuriver_client::{Client, ListParams};

use crate::kind::{Kind, split_kind_name};
use crate::output::{Format, Table, age, list_of, render_row, to_json, to_yaml};
use crate::rows::Columns;

/// Options of `kohakuriver events`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kohakuriver events
  kohakuriver events --for task/train-resnet
  kohakuriver events --for node/gpu-01 -w
  kohakuriver events -o wide
  kohakuriver events --for task/train-resnet -o yaml")]
pub struct Args {
    /// Only the events of this object: `task/NAME`, `node/NAME` or `taskgroup/NAME`.
    #[arg(long = "for", value_name = "KIND/NAME")]
    pub for_object: Option<String>,
    /// After listing, keep printing events as they happen, until Ctrl-C.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Output format: wide (more columns), yaml or json.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Format>,
}

/// The field selector for the events of `kind/name` (and only that object, when `uid` is
/// known).
pub fn selector_for(kind: &str, name: &str, uid: Option<&str>) -> String {
    let mut selector = format!("involvedObject.kind={kind},involvedObject.name={name}");
    if let Some(uid) = uid {
        let _ = write!(selector, ",involvedObject.uid={uid}");
    }
    selector
}

/// The field selector of `--for KIND/NAME`, or a clear refusal.
fn for_selector(arg: &str) -> anyhow::Result<String> {
    let Some((kind, name)) = split_kind_name(arg).filter(|(_, n)| !n.is_empty()) else {
        bail!(
            "--for {arg:?} is not KIND/NAME; write e.g. --for task/train-resnet or --for node/gpu-01"
        );
    };
    let kind = match kind {
        Kind::Task => Task::KIND,
        Kind::Node => Node::KIND,
        Kind::TaskGroup => TaskGroup::KIND,
        Kind::Event => {
            bail!("--for {arg:?}: events are about tasks, task groups and nodes, not events")
        }
    };
    Ok(selector_for(kind, name, None))
}

/// Events in the order people read them: by when they last happened, then by name.
pub fn sort(events: &mut [Event]) {
    events
        .sort_by(|a, b| (a.last_seen(), &a.metadata.name).cmp(&(b.last_seen(), &b.metadata.name)));
}

/// Prints the events.
pub async fn run(client: &Client, args: Args) -> anyhow::Result<ExitCode> {
    let params = ListParams {
        field_selector: args.for_object.as_deref().map(for_selector).transpose()?,
        ..ListParams::default()
    };
    let format = args.output.unwrap_or_default();
    if format == Format::Name {
        bail!(
            "events print as a table (-o wide for more columns), yaml or json; -o name is for get"
        );
    }
    let api = client.api::<Event>();
    if !args.watch {
        let mut list = api.list(&params).await.context("cannot list events")?;
        sort(&mut list.items);
        match format {
            Format::Yaml => print!(
                "{}",
                to_yaml(&list_of(list.items, list.metadata.resource_version))?
            ),
            Format::Json => print!(
                "{}",
                to_json(&list_of(list.items, list.metadata.resource_version))?
            ),
            _ if list.items.is_empty() => eprintln!("no events found"),
            _ => print!("{}", table(&list.items, format == Format::Wide).render()),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut changes = api.watcher(params);
    let mut widths: Option<Vec<usize>> = None;
    let mut connected = false;
    loop {
        let change = tokio::select! {
            change = changes.next() => change,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        let mut batch = match change {
            None => bail!("the watch ended unexpectedly"),
            // After a reconnect that had to list again, only what is new is printed.
            Some(Ok(Change::Restarted(items))) if connected => {
                let _ = items;
                continue;
            }
            Some(Ok(Change::Restarted(items))) => {
                connected = true;
                items
            }
            Some(Ok(Change::Applied(event))) => vec![event],
            Some(Ok(Change::Deleted(_))) => continue,
            Some(Err(e)) if !connected => return Err(e).context("cannot list events"),
            Some(Err(e)) => {
                eprintln!("warning: watch interrupted ({e}); reconnecting");
                continue;
            }
        };
        sort(&mut batch);
        print_batch(&batch, format, &mut widths)?;
    }
}

/// Prints a batch of a watch: YAML documents, JSON objects, or table rows that keep the
/// first batch's widths (with its header).
fn print_batch(
    batch: &[Event],
    format: Format,
    widths: &mut Option<Vec<usize>>,
) -> anyhow::Result<()> {
    match format {
        Format::Yaml => {
            for e in batch {
                print!("---\n{}", to_yaml(e)?);
            }
        }
        Format::Json => {
            for e in batch {
                print!("{}", to_json(e)?);
            }
        }
        _ => {
            let wide = format == Format::Wide;
            match widths {
                None => {
                    let t = table(batch, wide);
                    print!("{}", t.render());
                    *widths = Some(t.widths());
                }
                Some(widths) => {
                    let now = chrono::Utc::now();
                    for e in batch {
                        let row = e.row(wide, now);
                        for (slot, cell) in widths.iter_mut().zip(&row) {
                            *slot = (*slot).max(cell.chars().count());
                        }
                        println!("{}", render_row(&row, widths));
                    }
                }
            }
        }
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    Ok(())
}

fn table(events: &[Event], wide: bool) -> Table {
    let now = chrono::Utc::now();
    let mut table = Table::new(&Event::header(wide));
    for e in events {
        table.push(e.row(wide, now));
    }
    table
}

/// The Events section of `describe`, as kubectl prints it: type, reason, age (`10s (x3
/// over 5m)` for repeats), source and message, oldest first; `<none>` without events, and
/// what went wrong when they cannot be read.
pub async fn section<R: Resource>(client: &Client, object: &R, now: Timestamp) -> String {
    let selector = selector_for(R::KIND, object.name(), object.metadata().uid.as_deref());
    let params = ListParams::default().fields(&selector);
    match client.api::<Event>().list(&params).await {
        Ok(mut list) => {
            sort(&mut list.items);
            render_section(&list.items, now)
        }
        Err(e) => format!("Events:          <cannot be read: {e}>\n"),
    }
}

/// The Events section for `events` (pure).
pub fn render_section(events: &[Event], now: Timestamp) -> String {
    if events.is_empty() {
        return "Events:          <none>\n".to_string();
    }
    let mut t = Table::new(&["Type", "Reason", "Age", "From", "Message"]);
    let dashes = ["----", "------", "---", "----", "-------"];
    t.push(dashes.iter().map(|d| d.to_string()).collect());
    for e in events {
        let last = age(e.last_seen(), now);
        let when = if e.count > 1 {
            let first = age(e.first_timestamp.or(e.last_seen()), now);
            format!("{last} (x{} over {first})", e.count)
        } else {
            last
        };
        t.push(vec![
            e.type_.to_string(),
            e.reason.clone(),
            when,
            e.source.to_string(),
            e.message.clone(),
        ]);
    }
    let mut out = String::from("Events:\n");
    for line in t.render().lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kohakuriver_api::{EventSource, EventType, InvolvedObject};

    fn at(s: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn event(name: &str, reason: &str, first: i64, last: i64, count: u32) -> Event {
        let mut e = Event::new(
            name,
            InvolvedObject::of(&Task::test("t")),
            EventType::Normal,
            reason,
            format!("{reason} happened"),
            EventSource {
                component: "agent".into(),
                host: Some("n1".into()),
            },
            at(first),
        );
        e.last_timestamp = Some(at(last));
        e.count = count;
        e
    }

    #[test]
    fn sorted_by_when_they_last_happened() {
        let mut events = vec![
            event("c", "Exited", 5, 30, 3),
            event("a", "Scheduled", 0, 0, 1),
            event("b", "Started", 2, 29, 3),
        ];
        sort(&mut events);
        let reasons: Vec<&str> = events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["Scheduled", "Started", "Exited"]);
    }

    #[test]
    fn describe_section_like_kubectl() {
        let events = [
            event("a", "Scheduled", 0, 0, 1),
            event("c", "Exited", 5, 30, 3),
        ];
        let text = render_section(&events, at(90));
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        assert_eq!(lines[0], "Events:");
        let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            words(lines[1]),
            ["Type", "Reason", "Age", "From", "Message"],
            "{text}"
        );
        assert_eq!(
            words(lines[3]),
            [
                "Normal",
                "Scheduled",
                "90s",
                "agent,",
                "n1",
                "Scheduled",
                "happened"
            ],
            "{text}"
        );
        assert!(lines[4].contains("60s (x3 over 85s)"), "{text}");
        assert_eq!(render_section(&[], at(0)), "Events:          <none>\n");
    }

    #[test]
    fn for_names_an_object() {
        assert_eq!(
            for_selector("task/a").unwrap(),
            "involvedObject.kind=Task,involvedObject.name=a"
        );
        assert_eq!(
            for_selector("no/gpu-01").unwrap(),
            "involvedObject.kind=Node,involvedObject.name=gpu-01"
        );
        for bad in ["a", "task/", "pods/a", "event/x"] {
            let e = for_selector(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }
}
