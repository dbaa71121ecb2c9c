//! The API server's Prometheus metrics, served at `GET /metrics` in the Prometheus text
//! format (or OpenMetrics, when the scraper's `Accept` asks for it), encoded by the
//! `prometheus-client` crate.
//!
//! Three sources, each as cheap as its place allows:
//! - `requests`: the middleware around every route counts requests and times them.
//! - `recorder`: the store's writer hands it every committed batch; it keeps the census
//!   (`census`: tasks per phase, the queue, heartbeats) and observes scheduling and start
//!   latency, bindings and write latency as the writes commit, so a scrape reads no object.
//! - [`Scraped`]: read when scraped, from what is already in memory (the census, the open
//!   watch count) and the database file's size.
//!
//! Every name starts with `kohakuriver_`; ARCHITECTURE.md lists them.

mod census;
mod recorder;
mod requests;

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

pub use census::{Census, pending_since};
pub use recorder::Recorder;
pub use requests::{RequestMetrics, track};

use crate::limits::WatchCounter;
use crate::store::Store;

/// The metrics registry and the request families; a cheap `Clone` handle.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: RequestMetrics,
}

impl Metrics {
    /// The server's metrics over its store and watch counter.
    pub fn new(store: &Store, watches: &WatchCounter) -> Metrics {
        let mut registry = Registry::with_prefix("kohakuriver");
        let requests = RequestMetrics::default();
        requests.register(&mut registry);
        store.recorder().register(&mut registry);
        registry.register_collector(Box::new(Scraped {
            store: store.clone(),
            watches: watches.clone(),
        }));
        Metrics {
            registry: Arc::new(registry),
            requests,
        }
    }

    /// The request families, for the middleware.
    pub fn requests(&self) -> &RequestMetrics {
        &self.requests
    }

    /// Every metric in `format`. Reads the database file's size: call it off the runtime's
    /// worker threads.
    pub fn render(&self, format: Format) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)?
            }
        }
        Ok(out)
    }
}

/// The exposition formats served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4: what `promtool check metrics` reads and
    /// the default.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The answer's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` with a non-zero weight, else the Prometheus text
    /// format (which every scraper reads).
    pub fn for_accept(accept: Option<&str>) -> Format {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or("");
                let zero = parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q == 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !zero
            })
        });
        if wants_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// What is read at each scrape: the census's counts, the open watches, the database's size.
struct Scraped {
    store: Store,
    watches: WatchCounter,
}

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraped").finish_non_exhaustive()
    }
}

/// One gauge without labels.
fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: N,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let now = chrono::Utc::now();
        let (phases, (queued, oldest), heartbeats) = self.store.recorder().census(|census| {
            (
                census.phases(),
                census.queue(now),
                census.heartbeat_ages(now),
            )
        });
        let mut family =
            encoder.encode_descriptor("tasks", "Tasks by phase.", None, MetricType::Gauge)?;
        for (phase, n) in &phases {
            let labels = [("phase", phase.as_str())];
            ConstGauge::new(*n as i64).encode(family.encode_family(&labels)?)?;
        }
        gauge(
            &mut encoder,
            "task_queue_length",
            "Pending tasks.",
            None,
            queued as i64,
        )?;
        gauge(
            &mut encoder,
            "task_queue_oldest_age",
            "How long the task waiting longest in the queue has waited (0 when none waits).",
            Some(&Unit::Seconds),
            oldest.as_secs_f64(),
        )?;
        gauge(
            &mut encoder,
            "watches_open",
            "Open watch streams.",
            None,
            self.watches.total() as i64,
        )?;
        match self.store.size_bytes() {
            Ok(bytes) => gauge(
                &mut encoder,
                "store_size",
                "Size of the database (for a file, with its write-ahead log).",
                Some(&Unit::Bytes),
                bytes as i64,
            )?,
            Err(e) => tracing::warn!(error = %e, "cannot read the database's size for the metrics"),
        }
        if !heartbeats.is_empty() {
            let mut family = encoder.encode_descriptor(
                "node_heartbeat_age",
                "Time since the server committed a change of the node's lastHeartbeat.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for (node, age) in &heartbeats {
                let labels = [("node", node.as_str())];
                ConstGauge::new(age.as_secs_f64()).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_accept() {
        let cases: &[(Option<&str>, Format)] = &[
            (None, Format::Prometheus),
            (Some("*/*"), Format::Prometheus),
            (Some("text/plain"), Format::Prometheus),
            (
                Some("application/openmetrics-text;version=1.0.0"),
                Format::OpenMetrics,
            ),
            // What Prometheus itself sends.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                Format::OpenMetrics,
            ),
            (
                Some("text/plain;version=0.0.4, application/openmetrics-text; q=0"),
                Format::Prometheus,
            ),
            (
                Some("Application/OpenMetrics-Text; q=0.5"),
                Format::OpenMetrics,
            ),
        ];
        for (accept, want) in cases {
            assert_eq!(Format::for_accept(*accept), *want, "{accept:?}");
        }
    }
}
