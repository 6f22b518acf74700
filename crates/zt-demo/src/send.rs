//! Sends generated records to `zt ingest` over HTTP, as the upstream systems would.
//!
//! Native records go to `POST /v1/sources/{source}/events` as JSON arrays, tracking calls
//! to `POST /v1/batch` as Segment batches, each with its source's write key by HTTP Basic
//! (`key:`). Every source sends its requests one after another in record order (one
//! connection's worth of ordering, like a real system's outbox); the six sources send
//! concurrently. A request refused with 429 waits its `Retry-After`, a 5xx or a connection
//! error is retried with a capped backoff. Ingest deduplicates by the records' ids what it
//! has acknowledged, so a retry after a 429 or a refused connection publishes nothing
//! twice; after a 503 for a publish the broker acknowledged too late, the retry can
//! publish those records again (docs/ingest.md, delivery guarantee: at least once with
//! deduplication at the edge). Rejected items are counted and the first reasons kept:
//! the generator's records are all valid, so a rejection is a bug to report.

use crate::now_ms;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use zt_model::Source;

use crate::scenario::{Planned, utc};

/// How to send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Ingest's base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Write key per source (secrets: never printed).
    pub keys: BTreeMap<Source, String>,
    /// Records per request (at most ingest's `max_batch_events`).
    pub batch: usize,
    /// At most this many records per second overall; `None`: as fast as ingest answers.
    pub rate: Option<f64>,
    /// Draw a progress bar on standard error (a line every 10 % when it is not a terminal).
    pub progress: bool,
    /// Keep, for every accepted record, its event id and the wall time (ms) of its
    /// request's acknowledgement (the end-to-end benchmark's freshness clock).
    pub record_acks: bool,
    /// Records answered so far (accepted or rejected), updated as each request ends: for
    /// a caller that acts at a point of the run (the fault matrix).
    pub progress_counter: Option<Arc<AtomicU64>>,
}

/// What happened.
#[derive(Debug, Default, Clone)]
pub struct SendReport {
    /// Records sent.
    pub sent: u64,
    /// Records ingest accepted (including ones it recognised as duplicates).
    pub accepted: u64,
    /// Records ingest rejected.
    pub rejected: u64,
    /// The first rejection reasons, as ingest gave them.
    pub first_rejections: Vec<String>,
    /// Requests that succeeded, and retries.
    pub requests: u64,
    /// Retried requests (429, 5xx, connection errors).
    pub retries: u64,
    /// Wall time from the first request to the last acknowledgement.
    pub elapsed: Duration,
    /// Per accepted record (with `record_acks`): event id and acknowledgement time (ms).
    pub acks: Vec<(String, i64)>,
}

impl SendReport {
    /// One line: records sent, time, rate, accepted, rejected, requests and retries.
    pub fn summary(&self) -> String {
        format!(
            "sent {} records in {:.1} s ({:.0}/s): {} accepted, {} rejected, {} requests, {} retries",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.sent as f64 / self.elapsed.as_secs_f64().max(1e-3),
            self.accepted,
            self.rejected,
            self.requests,
            self.retries
        )
    }
}

struct Batch {
    source: Source,
    items: Vec<(Value, i64)>,
}

struct Outcome {
    sent: u64,
    accepted: u64,
    rejected: u64,
    reasons: Vec<String>,
    retries: u64,
    acks: Vec<(String, i64)>,
}

fn event_id(source: Source, v: &Value) -> Option<String> {
    let key = if source == Source::Tracking {
        "messageId"
    } else {
        "event_id"
    };
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Sends `records` in order; fails when ingest cannot be reached for a minute or a source
/// has no key. Rejected items do not fail it: they are in the report.
pub async fn send(records: &[Planned], opts: &SendOptions) -> anyhow::Result<SendReport> {
    if opts.batch == 0 {
        bail!("batch must be at least 1");
    }
    for s in Source::ALL {
        if records.iter().any(|r| r.source == s) && !opts.keys.contains_key(&s) {
            bail!("no write key for source {}", s.as_str());
        }
    }
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<anyhow::Result<Outcome>>();
    let mut senders = BTreeMap::new();
    for s in Source::ALL {
        let (tx, mut rx) = mpsc::channel::<Batch>(2);
        senders.insert(s, tx);
        let client = client.clone();
        let done = done_tx.clone();
        let url = opts.url.trim_end_matches('/').to_owned();
        let key = opts.keys.get(&s).cloned().unwrap_or_default();
        let record_acks = opts.record_acks;
        let counter = opts.progress_counter.clone();
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                let out = post(&client, &url, &key, batch, record_acks).await;
                if let (Some(c), Ok(o)) = (&counter, &out) {
                    c.fetch_add(o.sent, Ordering::Relaxed);
                }
                let failed = out.is_err();
                if done.send(out).is_err() || failed {
                    break;
                }
            }
        });
    }
    drop(done_tx);

    let started = Instant::now();
    let total = records.len() as u64;
    let mut progress = Progress::new(opts.progress, total);
    let mut report = SendReport::default();
    let mut pending: BTreeMap<Source, Vec<(Value, i64)>> = BTreeMap::new();
    let mut dispatched = 0u64;
    let mut in_flight = 0usize;
    // Keep the sources roughly together in time: flush everything every few batches.
    let window = opts.batch * 4;
    let mut since_flush = 0usize;
    let absorb = |o: Outcome, report: &mut SendReport, progress: &mut Progress| {
        report.sent += o.sent;
        report.accepted += o.accepted;
        report.rejected += o.rejected;
        report.retries += o.retries;
        report.requests += 1;
        if report.first_rejections.len() < 10 {
            report
                .first_rejections
                .extend(o.reasons.into_iter().take(10));
        }
        report.acks.extend(o.acks);
        progress.update(report.sent, started.elapsed());
    };
    for (i, r) in records.iter().enumerate() {
        pending
            .entry(r.source)
            .or_default()
            .push((r.body.clone(), r.skew_ms));
        since_flush += 1;
        let last = i + 1 == records.len();
        let mut to_send: Vec<Source> = Vec::new();
        if pending
            .get(&r.source)
            .is_some_and(|p| p.len() >= opts.batch)
        {
            to_send.push(r.source);
        }
        if since_flush >= window || last {
            to_send = pending.keys().copied().collect();
            since_flush = 0;
        }
        for s in to_send {
            let items = pending.remove(&s).unwrap_or_default();
            if items.is_empty() {
                continue;
            }
            dispatched += items.len() as u64;
            // Pace: never ahead of `rate` records per second.
            if let Some(rate) = opts.rate.filter(|r| *r > 0.0) {
                let due = Duration::from_secs_f64(dispatched as f64 / rate);
                let ahead = due.saturating_sub(started.elapsed());
                if !ahead.is_zero() {
                    tokio::time::sleep(ahead).await;
                }
            }
            // Collect finished requests so the reports keep up and errors surface early.
            while let Ok(o) = done_rx.try_recv() {
                in_flight -= 1;
                absorb(o?, &mut report, &mut progress);
            }
            let tx = senders.get(&s).context("sender")?;
            if tx.send(Batch { source: s, items }).await.is_err() {
                // The source's sender stopped after an error: surface that error.
                while let Ok(o) = done_rx.try_recv() {
                    o?;
                }
                bail!("the {} sender stopped", s.as_str());
            }
            in_flight += 1;
        }
    }
    drop(senders);
    while in_flight > 0 {
        match done_rx.recv().await {
            Some(o) => {
                in_flight -= 1;
                absorb(o?, &mut report, &mut progress);
            }
            None => break,
        }
    }
    report.elapsed = started.elapsed();
    progress.finish(report.sent, report.elapsed);
    Ok(report)
}

async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    key: &str,
    batch: Batch,
    record_acks: bool,
) -> anyhow::Result<Outcome> {
    let source = batch.source;
    let (path, body) = if source == Source::Tracking {
        (
            "/v1/batch".to_owned(),
            None::<Vec<u8>>, // built per attempt: sentAt is the send time
        )
    } else {
        let items: Vec<&Value> = batch.items.iter().map(|(v, _)| v).collect();
        (
            format!("/v1/sources/{}/events", source.as_str()),
            Some(serde_json::to_vec(&items)?),
        )
    };
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    );
    let mut retries = 0u64;
    let mut backoff = Duration::from_millis(100);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let bytes = match &body {
            Some(b) => b.clone(),
            None => {
                let now = now_ms();
                let calls: Vec<Value> = batch
                    .items
                    .iter()
                    .map(|(v, skew)| {
                        let mut v = v.clone();
                        v["sentAt"] = json!(utc(now + skew));
                        v
                    })
                    .collect();
                serde_json::to_vec(&json!({ "batch": calls }))?
            }
        };
        let req = hyper::Request::post(format!("{url}{path}"))
            .header("content-type", "application/json")
            .header("authorization", &auth)
            .body(Full::new(Bytes::from(bytes)))?;
        let res = client.request(req).await;
        let retry_after = match res {
            Err(e) => {
                if Instant::now() > deadline {
                    bail!("ingest at {url} unreachable: {e}");
                }
                None
            }
            Ok(res) => {
                let status = res.status();
                let ra = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let body = res.into_body().collect().await?.to_bytes();
                if status.is_success() {
                    let acked = now_ms();
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let rejected = v.get("rejected").and_then(Value::as_array);
                    let mut bad = std::collections::BTreeSet::new();
                    let mut reasons = Vec::new();
                    for r in rejected.into_iter().flatten() {
                        if let Some(i) = r.get("index").and_then(Value::as_u64) {
                            bad.insert(i as usize);
                        }
                        if reasons.len() < 10 {
                            reasons.push(format!("{} {r}", source.as_str()));
                        }
                    }
                    let n = batch.items.len() as u64;
                    let acks = if record_acks {
                        batch
                            .items
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| !bad.contains(i))
                            .filter_map(|(_, (v, _))| event_id(source, v))
                            .map(|id| (id, acked))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    return Ok(Outcome {
                        sent: n,
                        accepted: n - bad.len() as u64,
                        rejected: bad.len() as u64,
                        reasons,
                        retries,
                        acks,
                    });
                }
                if status.as_u16() == 429 || status.is_server_error() {
                    if Instant::now() > deadline {
                        bail!(
                            "ingest kept answering {status} for {} for a minute",
                            source.as_str()
                        );
                    }
                    ra.map(Duration::from_secs)
                } else {
                    // The whole request was refused (400, 401, 403, 413): a configuration
                    // problem (key, limits), not something a retry fixes.
                    bail!(
                        "ingest refused a {} request with {status}: {}",
                        source.as_str(),
                        String::from_utf8_lossy(&body)
                    );
                }
            }
        };
        retries += 1;
        tokio::time::sleep(retry_after.unwrap_or(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

struct Progress {
    on: bool,
    tty: bool,
    total: u64,
    last_tenth: u64,
}

impl Progress {
    fn new(on: bool, total: u64) -> Progress {
        Progress {
            on,
            tty: std::io::stderr().is_terminal(),
            total,
            last_tenth: 0,
        }
    }

    fn line(&self, done: u64, elapsed: Duration) -> String {
        let frac = if self.total == 0 {
            1.0
        } else {
            done as f64 / self.total as f64
        };
        let width = 30;
        let filled = ((frac * width as f64) as usize).min(width);
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
        format!(
            "[{}{}] {:>3.0}% {done}/{} records, {rate:.0}/s",
            "#".repeat(filled),
            "-".repeat(width - filled),
            frac * 100.0,
            self.total
        )
    }

    fn update(&mut self, done: u64, elapsed: Duration) {
        if !self.on {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{}", self.line(done, elapsed));
            let _ = err.flush();
        } else {
            let tenth = done * 10 / self.total.max(1);
            if tenth > self.last_tenth {
                self.last_tenth = tenth;
                let _ = writeln!(err, "{}", self.line(done, elapsed));
            }
        }
    }

    fn finish(&mut self, done: u64, elapsed: Duration) {
        if self.on && self.tty {
            let _ = writeln!(std::io::stderr().lock(), "\r{}", self.line(done, elapsed));
        }
    }
}
