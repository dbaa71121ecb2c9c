//! `kohakuriver get tasks|nodes [NAME…]`: tables, YAML, JSON or names; `-w` follows changes.

use std::process::ExitCode;

use anyhow::{Context, bail};
use futures::StreamExt;
use kohakuriver_api::{Node, Task, TaskGroup};
use kohakuriver_client::watcher::Event;
use kohakuriver_client::{Api, Client, ListParams};

use crate::kind::{Kind, kind_and_names};
use crate::output::{Format, Table, kind_name, list_of, render_row, to_json, to_yaml};
use crate::rows::Columns;

/// Options of `kohakuriver get`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kohakuriver get tasks
  kohakuriver get tasks -l team=vision -o wide
  kohakuriver get task train-resnet -o yaml
  kohakuriver get nodes -w
  kohakuriver get events --field-selector involvedObject.name=train-resnet")]
pub struct Args {
    /// `tasks`, `nodes` (or `task`, `node`); `task/NAME` also works.
    #[arg(value_name = "KIND")]
    pub kind: String,
    /// Only these objects.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Label selector, e.g. `team=vision,tier!=batch`.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Field selector, e.g. `status.phase=Running,status.node=n1`.
    #[arg(long, value_name = "SELECTOR")]
    pub field_selector: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Format>,
    /// After listing, keep printing objects as they change, until Ctrl-C.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Keep `metadata.managedFields` (who set which field) in `-o yaml|json`; hidden by
    /// default, as kubectl does.
    #[arg(long)]
    pub show_managed_fields: bool,
    /// Read a long list in pages of this many objects (0: all in one answer), as kubectl's
    /// `--chunk-size`; tables and names print each page as it arrives.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CHUNK_SIZE)]
    pub chunk_size: u64,
}

/// How many objects `get` and `task list` ask for at a time (kubectl's default too).
pub const DEFAULT_CHUNK_SIZE: u64 = 500;

impl Args {
    fn format(&self) -> Format {
        self.output.unwrap_or_default()
    }
}

/// Prints the objects.
pub async fn run(client: &Client, mut args: Args) -> anyhow::Result<ExitCode> {
    let kind = kind_and_names(&args.kind, &mut args.names).map_err(anyhow::Error::msg)?;
    match kind {
        Kind::Task => get(&client.api::<Task>(), &args).await,
        Kind::Node => get(&client.api::<Node>(), &args).await,
        Kind::TaskGroup => get(&client.api::<TaskGroup>(), &args).await,
        Kind::Event => get(&client.api::<kohakuriver_api::Event>(), &args).await,
    }
}

async fn get<R: Columns>(api: &Api<R>, args: &Args) -> anyhow::Result<ExitCode> {
    let params = ListParams {
        label_selector: args.selector.clone(),
        field_selector: args.field_selector.clone(),
        ..ListParams::default()
    };
    if args.watch {
        return watch(api, params, args).await;
    }
    if args.names.is_empty() {
        return list(api, params, args).await;
    }
    let mut items = Vec::new();
    for name in &args.names {
        items.push(api.get(name).await?);
    }
    let revision = items
        .iter()
        .map(|o| o.resource_version())
        .max()
        .unwrap_or(0);
    let single = args.names.len() == 1;
    if !args.show_managed_fields {
        items.iter_mut().for_each(hide_managed_fields);
    }
    match args.format() {
        Format::Yaml if single => print!("{}", to_yaml(&items[0])?),
        Format::Json if single => print!("{}", to_json(&items[0])?),
        Format::Yaml => print!("{}", to_yaml(&list_of(items, revision))?),
        Format::Json => print!("{}", to_json(&list_of(items, revision))?),
        Format::Name => items.iter().for_each(|o| println!("{}", kind_name(o))),
        Format::Table | Format::Wide => {
            if items.is_empty() {
                eprintln!("no {} found", R::PLURAL);
            } else {
                print!("{}", table(&items, args.format() == Format::Wide).render());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the whole list, read a page at a time: tables and names print each page as it
/// arrives (the first page's columns widen when a later cell must), so memory holds one
/// page; YAML and JSON are one `List` document, so they gather every page first.
async fn list<R: Columns>(
    api: &Api<R>,
    params: ListParams,
    args: &Args,
) -> anyhow::Result<ExitCode> {
    let mut pages = api.list_pages(&params, args.chunk_size);
    let context = || format!("cannot list {}", R::PLURAL);
    match args.format() {
        Format::Yaml | Format::Json => {
            let mut items = Vec::new();
            let mut revision = None;
            while let Some(page) = pages.next().await {
                let page = page.with_context(context)?;
                revision.get_or_insert(page.metadata.resource_version);
                items.extend(page.items);
            }
            if !args.show_managed_fields {
                items.iter_mut().for_each(hide_managed_fields);
            }
            let list = list_of(items, revision.unwrap_or(0));
            if args.format() == Format::Yaml {
                print!("{}", to_yaml(&list)?);
            } else {
                print!("{}", to_json(&list)?);
            }
        }
        output => {
            let mut printer = WatchPrinter {
                names: &[],
                output,
                show_managed_fields: args.show_managed_fields,
                widths: None,
            };
            let mut printed = false;
            while let Some(page) = pages.next().await {
                let page = page.with_context(context)?;
                if !page.items.is_empty() {
                    printed = true;
                    printer.print(page.items)?;
                }
            }
            if !printed {
                eprintln!("no {} found", R::PLURAL);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn table<R: Columns>(items: &[R], wide: bool) -> Table {
    let now = chrono::Utc::now();
    let mut table = Table::new(&R::header(wide));
    for item in items {
        table.push(item.row(wide, now));
    }
    table
}

/// Prints the current objects, then each change, until Ctrl-C.
async fn watch<R: Columns>(
    api: &Api<R>,
    params: ListParams,
    args: &Args,
) -> anyhow::Result<ExitCode> {
    let mut events = api.watcher(params);
    let mut printer = WatchPrinter {
        names: &args.names,
        output: args.format(),
        show_managed_fields: args.show_managed_fields,
        widths: None,
    };
    let mut connected = false;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        };
        match event {
            None => bail!("the watch ended unexpectedly"),
            Some(Ok(Event::Restarted(items))) => {
                connected = true;
                printer.print(items)?;
            }
            Some(Ok(Event::Applied(obj) | Event::Deleted(obj))) => printer.print(vec![obj])?,
            Some(Err(e)) if !connected => {
                return Err(e).with_context(|| format!("cannot list {}", R::PLURAL));
            }
            Some(Err(e)) => eprintln!("warning: watch interrupted ({e}); reconnecting"),
        }
    }
}

/// Drops `metadata.managedFields` from an object about to be printed.
fn hide_managed_fields<R: Columns>(object: &mut R) {
    object.metadata_mut().managed_fields.clear();
}

/// Prints objects as a watch delivers them. Table rows keep the column widths of the first
/// batch (with its header) so they line up, widening only when a cell must.
struct WatchPrinter<'a> {
    names: &'a [String],
    output: Format,
    show_managed_fields: bool,
    widths: Option<Vec<usize>>,
}

impl WatchPrinter<'_> {
    fn print<R: Columns>(&mut self, objs: Vec<R>) -> anyhow::Result<()> {
        let mut objs: Vec<R> = objs
            .into_iter()
            .filter(|o| self.names.is_empty() || self.names.iter().any(|n| n == o.name()))
            .collect();
        if !self.show_managed_fields {
            objs.iter_mut().for_each(hide_managed_fields);
        }
        let wide = self.output == Format::Wide;
        match self.output {
            Format::Yaml => objs.iter().try_for_each(|o| -> anyhow::Result<()> {
                print!("---\n{}", to_yaml(o)?);
                Ok(())
            })?,
            Format::Json => objs.iter().try_for_each(|o| -> anyhow::Result<()> {
                print!("{}", to_json(o)?);
                Ok(())
            })?,
            Format::Name => objs.iter().for_each(|o| println!("{}", kind_name(o))),
            Format::Table | Format::Wide => match &mut self.widths {
                None => {
                    let t = table(&objs, wide);
                    print!("{}", t.render());
                    self.widths = Some(t.widths());
                }
                Some(widths) => {
                    let now = chrono::Utc::now();
                    for obj in &objs {
                        let row = obj.row(wide, now);
                        for (slot, cell) in widths.iter_mut().zip(&row) {
                            *slot = (*slot).max(cell.chars().count());
                        }
                        println!("{}", render_row(&row, widths));
                    }
                }
            },
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        Ok(())
    }
}
