//! The fault matrix (`zt chaos`, `make chaos`; docs/reliability.md).
//!
//! One run = the whole pipeline ([`Pipeline`]: ingest, identity, profiles, funnels and the
//! sink as child processes on fresh topics and a fresh ClickHouse database), a seeded
//! world sent over HTTP at a steady rate, and **one** fault injected when a given share of
//! the records has been answered by ingest:
//!
//! - `kill:<component>:<percent>`: `kill -9` of one component, started again a second
//!   later with the same configuration (as an orchestrator's restart policy would);
//! - `restart-broker:<percent>` / `restart-clickhouse:<percent>`: the local stack's
//!   service stopped and started again (`deploy/local/stack.sh restart`; tansu keeps its
//!   SQLite storage, ClickHouse its data directory);
//! - `cut-clickhouse:<percent>:<secs>` / `cut-broker:<percent>:<secs>`: the service frozen
//!   (`SIGSTOP`) for that long and then let go: connections stay open and nothing
//!   answers, like a network cut-off;
//! - `none`: no fault (the baseline).
//!
//! Meanwhile every component that exits is started again (a supervisor, every 100 ms).
//! After the sender is done the run waits until every consumer group has committed its
//! inputs, then checks, against oracles that do not come from the platform:
//!
//! - [`verify::exactly_once`]: the events table holds each offset of the resolved topic
//!   once (broker watermarks) and each event ingest acknowledged once, nothing else;
//! - [`verify::profiles_match_orders`]: every live profile equals a recomputation from
//!   the paid orders in ClickHouse, followed through the identity merges;
//! - [`verify::against_truth`]: every KPI the generator's ground truth knows.
//!
//! A negative control ([`Control::SinkResumeOff`]) runs the sink with its effectively-once
//! resume switched off and a crash between an insert and its offset commit: the same
//! checks must report duplicates, or the matrix proves nothing.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use zt_kafka::{KafkaConfig, TopicsConfig};
use zt_sink::config::ClickHouseConfig;

use crate::demo::{COMPONENTS, Pipeline, PipelineOptions, stages};
use crate::drain::wait_drained;
use crate::scenario::{self, Params};
use crate::send::{SendOptions, SendReport, send};
use crate::verify;

/// One fault of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// No fault: the baseline.
    None,
    /// `kill -9` of a component at `at` percent of the records, then a restart.
    Kill {
        /// `ingest`, `identity`, `profiles`, `funnels` or `sink`.
        component: String,
        /// Percent of the records answered by ingest.
        at: u8,
    },
    /// The broker stopped and started again (durable storage).
    RestartBroker {
        /// Percent of the records answered by ingest.
        at: u8,
    },
    /// ClickHouse stopped and started again.
    RestartClickHouse {
        /// Percent of the records answered by ingest.
        at: u8,
    },
    /// The broker frozen for `secs` seconds.
    CutBroker {
        /// Percent of the records answered by ingest.
        at: u8,
        /// How long.
        secs: u64,
    },
    /// ClickHouse frozen for `secs` seconds.
    CutClickHouse {
        /// Percent of the records answered by ingest.
        at: u8,
        /// How long.
        secs: u64,
    },
}

impl Fault {
    /// The fault's id, as [`Fault::parse`] reads it (`kill:sink:50`).
    pub fn id(&self) -> String {
        match self {
            Fault::None => "none".into(),
            Fault::Kill { component, at } => format!("kill:{component}:{at}"),
            Fault::RestartBroker { at } => format!("restart-broker:{at}"),
            Fault::RestartClickHouse { at } => format!("restart-clickhouse:{at}"),
            Fault::CutBroker { at, secs } => format!("cut-broker:{at}:{secs}"),
            Fault::CutClickHouse { at, secs } => format!("cut-clickhouse:{at}:{secs}"),
        }
    }

    /// In words, for the results table.
    pub fn describe(&self) -> String {
        match self {
            Fault::None => "no fault".into(),
            Fault::Kill { component, at } => format!("kill -9 {component} at {at} %"),
            Fault::RestartBroker { at } => format!("broker restarted at {at} %"),
            Fault::RestartClickHouse { at } => format!("ClickHouse restarted at {at} %"),
            Fault::CutBroker { at, secs } => format!("broker cut off for {secs} s at {at} %"),
            Fault::CutClickHouse { at, secs } => {
                format!("ClickHouse cut off for {secs} s at {at} %")
            }
        }
    }

    /// Reads an id (`none`, `kill:<component>:<pct>`, `restart-broker:<pct>`,
    /// `restart-clickhouse:<pct>`, `cut-broker:<pct>:<secs>`, `cut-clickhouse:<pct>:<secs>`).
    pub fn parse(s: &str) -> anyhow::Result<Fault> {
        let parts: Vec<&str> = s.split(':').collect();
        let pct = |p: &str| -> anyhow::Result<u8> {
            let v: u8 = p
                .parse()
                .with_context(|| format!("fault `{s}`: `{p}` is not a percentage"))?;
            if v > 100 {
                bail!("fault `{s}`: {v} is more than 100 %");
            }
            Ok(v)
        };
        let secs = |p: &str| -> anyhow::Result<u64> {
            p.parse()
                .with_context(|| format!("fault `{s}`: `{p}` is not a number of seconds"))
        };
        Ok(match parts.as_slice() {
            ["none"] => Fault::None,
            ["kill", c, p] => {
                if !COMPONENTS.iter().any(|(n, _)| n == c) {
                    bail!(
                        "fault `{s}`: `{c}` is not a component (ingest, identity, profiles, funnels, sink)"
                    );
                }
                Fault::Kill {
                    component: (*c).to_owned(),
                    at: pct(p)?,
                }
            }
            ["restart-broker", p] => Fault::RestartBroker { at: pct(p)? },
            ["restart-clickhouse", p] => Fault::RestartClickHouse { at: pct(p)? },
            ["cut-broker", p, d] => Fault::CutBroker {
                at: pct(p)?,
                secs: secs(d)?,
            },
            ["cut-clickhouse", p, d] => Fault::CutClickHouse {
                at: pct(p)?,
                secs: secs(d)?,
            },
            _ => bail!(
                "fault `{s}`: expected none, kill:<component>:<pct>, restart-broker:<pct>, restart-clickhouse:<pct>, cut-broker:<pct>:<secs> or cut-clickhouse:<pct>:<secs>"
            ),
        })
    }

    /// When to inject it: percent of the records.
    fn at(&self) -> Option<u8> {
        match self {
            Fault::None => None,
            Fault::Kill { at, .. }
            | Fault::RestartBroker { at }
            | Fault::RestartClickHouse { at }
            | Fault::CutBroker { at, .. }
            | Fault::CutClickHouse { at, .. } => Some(*at),
        }
    }

    /// True when the fault needs the local stack's script (it acts on the broker or
    /// ClickHouse, which other users of the stack share).
    pub fn touches_stack(&self) -> bool {
        !matches!(self, Fault::None | Fault::Kill { .. })
    }
}

/// The full sweep: every component killed at 10, 50 and 90 %, the broker and ClickHouse
/// restarted, and each of them cut off for 20 s.
pub fn full_matrix() -> Vec<Fault> {
    let mut out = Vec::new();
    for (c, _) in COMPONENTS {
        for at in [10, 50, 90] {
            out.push(Fault::Kill {
                component: c.to_owned(),
                at,
            });
        }
    }
    out.push(Fault::RestartBroker { at: 50 });
    out.push(Fault::RestartClickHouse { at: 50 });
    out.push(Fault::CutBroker { at: 50, secs: 20 });
    out.push(Fault::CutClickHouse { at: 50, secs: 20 });
    out
}

/// The smoke set of the normal test suite: faults that touch only the run's own
/// processes (the shared broker and ClickHouse stay up for the other tests).
pub fn smoke_set() -> Vec<Fault> {
    ["ingest", "identity", "sink"]
        .into_iter()
        .map(|c| Fault::Kill {
            component: c.to_owned(),
            at: 50,
        })
        .collect()
}

/// A guarantee switched off on purpose, to show the checks can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Everything as shipped.
    None,
    /// The sink without its resume (`ZT_SINK_DISABLE_RESUME=1`, test only), crashing after
    /// its second batch of `events.resolved` was inserted and before its offsets were
    /// committed (`ZT_SINK_FAILPOINT=before_commit:2@.events.resolved`); restarted, it
    /// loads those records again.
    SinkResumeOff,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The `zt` executable.
    pub zt_exe: PathBuf,
    /// `deploy/local/stack.sh`, for the broker and ClickHouse faults.
    pub stack_script: Option<PathBuf>,
    /// Configuration and logs of the runs (one folder per run below it).
    pub work_dir: PathBuf,
    /// ClickHouse database (dropped and re-created by every run).
    pub database: String,
    /// Generator seed.
    pub seed: u64,
    /// Persons to generate.
    pub persons: u32,
    /// Days of history.
    pub days: u32,
    /// Records per second the sender keeps to (the fault lands mid-stream).
    pub rate: f64,
    /// Give up waiting for the pipeline after this long.
    pub drain_timeout: Duration,
    /// Progress lines on standard error.
    pub progress: bool,
    /// Start every run on an empty broker (`stack.sh reset-kafka`): tansu's SQLite store
    /// slows down as runs pile up topics (a sweep creates about 400), until the broker
    /// stops answering for tens of seconds. Forgets every topic of the local broker.
    pub fresh_broker: bool,
}

/// What one run found.
#[derive(Debug)]
pub struct RunOutcome {
    /// The fault.
    pub fault: Fault,
    /// The guarantee switched off, if any.
    pub control: Control,
    /// Records in the world.
    pub records: u64,
    /// Records answered when the fault was injected (`None`: no fault).
    pub injected_at: Option<u64>,
    /// What the sender saw (retries show the fault from the outside).
    pub sent: SendReport,
    /// Starts per component (more than 1: restarted).
    pub starts: Vec<(String, u32)>,
    /// From the first record sent to the pipeline drained.
    pub pipeline: Duration,
    /// Every difference the checks found; empty means the run passed.
    pub problems: Vec<String>,
    /// False when the run could not be completed ([`RunOutcome::not_completed`]).
    pub completed: bool,
}

impl RunOutcome {
    /// True when nothing was found.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// A run that could not be completed: it fails with the error (a negative control
    /// that could not run is not "caught" either).
    pub fn not_completed(fault: &Fault, control: Control, e: &anyhow::Error) -> RunOutcome {
        RunOutcome {
            fault: fault.clone(),
            control,
            records: 0,
            injected_at: None,
            sent: SendReport::default(),
            starts: Vec::new(),
            pipeline: Duration::ZERO,
            problems: vec![format!("the run could not be completed: {e:#}")],
            completed: false,
        }
    }
}

/// Runs one fault on a fresh pipeline and checks the result.
pub async fn run(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    clickhouse: &ClickHouseConfig,
    opts: &ChaosOptions,
    fault: &Fault,
    control: Control,
) -> anyhow::Result<RunOutcome> {
    let say = |m: &str| {
        if opts.progress {
            eprintln!("zt chaos [{}]: {m}", fault.id());
        }
    };
    if (fault.touches_stack() || opts.fresh_broker) && opts.stack_script.is_none() {
        bail!(
            "fault {} acts on the local stack and needs deploy/local/stack.sh",
            fault.id()
        );
    }
    if opts.fresh_broker {
        say("resetting the local broker (stack.sh reset-kafka)");
        stack(opts, &["reset-kafka"]).await?;
    }
    let mut env = Vec::new();
    if control == Control::SinkResumeOff {
        for (k, v) in [
            ("ZT_SINK_DISABLE_RESUME", "1"),
            (zt_sink::failpoint::ENV, "before_commit:2@.events.resolved"),
        ] {
            env.push(("sink".to_owned(), k.to_owned(), v.to_owned()));
        }
    }
    let work_dir = opts.work_dir.join(fault.id().replace(':', "-"));
    // Logs of an earlier run of the same fault would be appended to.
    let _ = std::fs::remove_dir_all(&work_dir);
    let mut pipeline = Pipeline::start(
        kafka,
        topics,
        clickhouse,
        &PipelineOptions {
            zt_exe: opts.zt_exe.clone(),
            work_dir,
            database: opts.database.clone(),
            extra_config: None,
            env,
        },
    )
    .await?;
    let world = scenario::generate(Params::new(
        opts.seed,
        opts.persons,
        opts.days,
        pipeline.started_ms,
    ));
    let total = world.records.len() as u64;
    let truth = world.truth;
    let counter = Arc::new(AtomicU64::new(0));
    let send_opts = SendOptions {
        url: pipeline.ingest_url.clone(),
        keys: pipeline.keys.clone(),
        batch: 100,
        rate: Some(opts.rate),
        progress: false,
        record_acks: true,
        progress_counter: Some(counter.clone()),
    };
    let records = world.records;
    let t0 = Instant::now();
    let mut sender = tokio::spawn(async move { send(&records, &send_opts).await });
    say(&format!("sending {total} records at {} /s", opts.rate));

    // Inject the fault at its point; restart whatever exits meanwhile.
    let due = fault.at().map(|p| (total * u64::from(p)).div_ceil(100));
    let mut injected_at = None;
    let sent = loop {
        tokio::select! {
            r = &mut sender => break r.context("the sender task")??,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if injected_at.is_none()
            && let Some(due) = due
            && counter.load(Ordering::Relaxed) >= due
        {
            let at = counter.load(Ordering::Relaxed);
            say(&format!(
                "injecting {} after {at} records",
                fault.describe()
            ));
            inject(&mut pipeline, fault, opts).await?;
            injected_at = Some(at);
        }
        for name in pipeline.revive()? {
            say(&format!("{name} exited; started again"));
        }
    };
    say(&sent.summary());
    if let (None, Some(_)) = (injected_at, due) {
        // The last request answered before the loop looked: inject now, while the
        // processors and the sink still work through the records.
        let at = counter.load(Ordering::Relaxed);
        say(&format!(
            "injecting {} after {at} records",
            fault.describe()
        ));
        inject(&mut pipeline, fault, opts).await?;
        injected_at = Some(at);
    }

    // Drain, restarting what exits.
    let mut revived: Vec<String> = Vec::new();
    let drained = wait_drained(
        kafka,
        &stages(&pipeline.topics),
        opts.drain_timeout,
        Duration::from_millis(1000),
        |_| {
            if let Ok(names) = pipeline.revive() {
                revived.extend(names);
            }
        },
    )
    .await;
    for name in &revived {
        say(&format!("{name} exited while draining; started again"));
    }
    let pipeline_time = t0.elapsed();
    let mut problems = Vec::new();
    if let Err(e) = drained {
        problems.push(format!("the pipeline did not drain: {e:#}"));
    }
    for d in pipeline.dead() {
        problems.push(format!("component down at the end: {d}"));
    }
    if sent.rejected > 0 {
        problems.push(format!(
            "{} records rejected: {:?}",
            sent.rejected, sent.first_rejections
        ));
    }

    // The checks.
    let ch = pipeline.clickhouse.client();
    let acked: HashSet<String> = sent.acks.iter().map(|(id, _)| id.clone()).collect();
    problems.extend(
        verify::exactly_once(kafka, &ch, &pipeline.topics.events_resolved(), &acked)
            .await
            .context("checking exactly-once")?,
    );
    problems.extend(
        verify::profiles_match_orders(&ch)
            .await
            .context("checking the profiles")?,
    );
    problems.extend(
        verify::against_truth(&ch, &truth)
            .await
            .context("checking the KPIs against the truth")?,
    );
    let starts = pipeline.starts();
    pipeline.stop();
    say(&format!(
        "{} in {:.0} s; starts {:?}",
        if problems.is_empty() {
            "passed".to_owned()
        } else {
            format!("{} problems", problems.len())
        },
        pipeline_time.as_secs_f64(),
        starts
    ));
    Ok(RunOutcome {
        fault: fault.clone(),
        control,
        records: total,
        injected_at,
        sent,
        starts,
        pipeline: pipeline_time,
        problems,
        completed: true,
    })
}

async fn inject(pipeline: &mut Pipeline, fault: &Fault, opts: &ChaosOptions) -> anyhow::Result<()> {
    match fault {
        Fault::None => {}
        Fault::Kill { component, .. } => {
            pipeline.kill(component)?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            // The supervisor loop starts it again (`revive`).
        }
        Fault::RestartBroker { .. } => stack(opts, &["restart", "kafka"]).await?,
        Fault::RestartClickHouse { .. } => stack(opts, &["restart", "clickhouse"]).await?,
        Fault::CutBroker { secs, .. } | Fault::CutClickHouse { secs, .. } => {
            let service = if matches!(fault, Fault::CutBroker { .. }) {
                "kafka"
            } else {
                "clickhouse"
            };
            stack(opts, &["pause", service]).await?;
            // Let go even when this task is cancelled half-way.
            let guard = Resume(opts.stack_script.clone(), service);
            tokio::time::sleep(Duration::from_secs(*secs)).await;
            drop(guard);
        }
    }
    Ok(())
}

/// Sends SIGCONT to a paused service when dropped.
struct Resume(Option<PathBuf>, &'static str);

impl Drop for Resume {
    fn drop(&mut self) {
        if let Some(script) = &self.0 {
            let _ = Command::new("bash")
                .arg(script)
                .args(["resume", self.1])
                .status();
        }
    }
}

async fn stack(opts: &ChaosOptions, args: &[&str]) -> anyhow::Result<()> {
    let script = opts
        .stack_script
        .clone()
        .context("no deploy/local/stack.sh")?;
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let what = args.join(" ");
    let st =
        tokio::task::spawn_blocking(move || Command::new("bash").arg(&script).args(&args).status())
            .await
            .context("the stack task")?
            .with_context(|| format!("running stack.sh {what}"))?;
    if !st.success() {
        bail!("stack.sh {what} failed ({st})");
    }
    Ok(())
}

/// The results as a Markdown table (docs/reliability.md).
pub fn markdown(results: &[RunOutcome]) -> String {
    let mut out = String::from(
        "| fault | records | injected after | sender retries | restarts | drained in | result |\n|---|---:|---:|---:|---|---:|---|\n",
    );
    for r in results {
        let restarts: Vec<String> = r
            .starts
            .iter()
            .filter(|(_, n)| *n > 1)
            .map(|(c, n)| format!("{c} ×{}", n - 1))
            .collect();
        let mut fault = r.fault.describe();
        if r.control == Control::SinkResumeOff {
            fault = format!("negative control: sink resume off, crash before a commit ({fault})");
        }
        let result = match (r.control, r.passed()) {
            (Control::None, true) => "exactly once, KPIs = truth".to_owned(),
            (_, false) if !r.completed => format!("**FAILED**: {}", r.problems[0]),
            (Control::None, false) => format!("**FAILED**: {}", r.problems[0]),
            (_, false) => format!("caught: {}", r.problems[0]),
            (_, true) => "**NOT CAUGHT**".to_owned(),
        };
        out.push_str(&format!(
            "| {fault} | {} | {} | {} | {} | {:.0} s | {} |\n",
            r.records,
            r.injected_at.map_or("-".into(), |n| n.to_string()),
            r.sent.retries,
            if restarts.is_empty() {
                "-".into()
            } else {
                restarts.join(", ")
            },
            r.pipeline.as_secs_f64(),
            result.replace('|', "\\|")
        ));
    }
    out
}
