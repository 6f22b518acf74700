//! `zt demo`: the whole platform on the local stack, in one command.
//!
//! 1. brings the local stack up (`deploy/local/stack.sh up`: tansu and ClickHouse), unless
//!    told not to;
//! 2. creates a fresh set of topics under a per-run prefix (`ztdemo-<unix seconds>`) and a
//!    fresh ClickHouse database
//!    (`zhongtai_demo` by default: dropped, then migrated);
//! 3. writes the run's configuration (`<work dir>/zt-demo.toml`: the prefix, consumer
//!    groups of its own, per-run write keys stored as SHA-256, the sink reading the
//!    resolved events and the processors' outputs) and starts `zt ingest`,
//!    `zt process identity|profiles|funnels` and `zt sink` as child processes, each with
//!    its own log file and metrics port;
//! 4. generates the seeded world ([`crate::scenario`]) and posts it to ingest over HTTP;
//! 5. waits until every consumer group has committed everything on its inputs
//!    ([`crate::drain`]), twice in a row;
//! 6. reads the KPIs from ClickHouse and prints the report ([`zt_report`]), optionally as
//!    HTML, and stops the components (or leaves them running).
//!
//! The run's ground truth can be written as JSON next to the report: the end-to-end test
//! compares the KPI views with it.

use crate::now_ms;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use zt_kafka::{KafkaConfig, TopicsConfig};
use zt_model::Source;
use zt_sink::config::ClickHouseConfig;

use crate::drain::{Stage, wait_drained};
use crate::scenario::{self, Params, Truth};
use crate::send::{SendOptions, SendReport, send};

/// Prefix of the demo's topic sets; each run adds its start time.
pub const DEMO_PREFIX: &str = "ztdemo-";

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The `zt` executable to start the components with.
    pub zt_exe: PathBuf,
    /// `deploy/local/stack.sh` to run with `up` first; `None` uses what is running.
    pub stack_script: Option<PathBuf>,
    /// Where the run's configuration and the components' logs go.
    pub work_dir: PathBuf,
    /// Generator settings.
    pub seed: u64,
    /// Persons to generate.
    pub persons: u32,
    /// Days of history.
    pub days: u32,
    /// Records per second at most (`None`: as fast as ingest takes them).
    pub rate: Option<f64>,
    /// ClickHouse database for the run (dropped and re-created).
    pub database: String,
    /// Write the report as HTML here too.
    pub html: Option<PathBuf>,
    /// Write the generator's ground truth here (JSON).
    pub truth_out: Option<PathBuf>,
    /// Leave the components running after the report (stop with Ctrl-C).
    pub keep_running: bool,
    /// Give up waiting for the pipeline after this long.
    pub drain_timeout: Duration,
    /// Progress on standard error.
    pub progress: bool,
}

/// What a run produced.
#[derive(Debug)]
pub struct DemoOutcome {
    /// The topic prefix of the run.
    pub prefix: String,
    /// The generator's ground truth.
    pub truth: Truth,
    /// What the sender saw.
    pub sent: SendReport,
    /// From the first record sent to the pipeline drained.
    pub pipeline: Duration,
    /// The report as printed.
    pub report_text: String,
    /// Report sections that could not be read: (view, error).
    pub report_errors: Vec<(String, String)>,
}

/// Runs the demo against `kafka` and `clickhouse` (their addresses; the database is
/// `opts.database`), with `topics`' sizes under a per-run prefix. Prints progress to
/// standard error and returns the report. SIGINT or SIGTERM stops the components and
/// ends the run with an error.
pub async fn run(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    clickhouse: &ClickHouseConfig,
    opts: &DemoOptions,
) -> anyhow::Result<DemoOutcome> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        out = run_until_done(kafka, topics, clickhouse, opts) => out,
        // Dropping the run's future drops its pipeline, which stops the components.
        _ = tokio::signal::ctrl_c() => bail!("interrupted; the components were stopped"),
        _ = term.recv() => bail!("terminated; the components were stopped"),
    }
}

async fn run_until_done(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    clickhouse: &ClickHouseConfig,
    opts: &DemoOptions,
) -> anyhow::Result<DemoOutcome> {
    let say = |m: &str| eprintln!("zt demo: {m}");
    if let Some(script) = &opts.stack_script {
        say(&format!(
            "bringing the local stack up ({})",
            script.display()
        ));
        let st = Command::new("bash")
            .arg(script)
            .arg("up")
            .status()
            .with_context(|| format!("running {}", script.display()))?;
        if !st.success() {
            bail!("{} up failed ({st})", script.display());
        }
    }
    let mut running = Pipeline::start(
        kafka,
        topics,
        clickhouse,
        &PipelineOptions {
            zt_exe: opts.zt_exe.clone(),
            work_dir: opts.work_dir.clone(),
            database: opts.database.clone(),
            extra_config: None,
            env: Vec::new(),
        },
    )
    .await?;
    let started = running.started_ms;
    let prefix = running.prefix.clone();
    let ch = running.clickhouse.clone();
    let keys = running.keys.clone();
    let ingest_url = running.ingest_url.clone();
    let topics = running.topics.clone();

    // Traffic.
    let params = Params::new(opts.seed, opts.persons, opts.days, started);
    let world = scenario::generate(params);
    say(&format!(
        "generated {} records for {} persons over {} days (seed {})",
        world.records.len(),
        opts.persons,
        opts.days,
        opts.seed
    ));
    let t0 = Instant::now();
    let sent = send(
        &world.records,
        &SendOptions {
            url: ingest_url,
            keys,
            batch: 200,
            rate: opts.rate,
            progress: opts.progress,
            record_acks: false,
            progress_counter: None,
        },
    )
    .await?;
    say(&sent.summary());
    for r in &sent.first_rejections {
        say(&format!("rejected: {r}"));
    }

    // Drain. A component that exits (a processor gives up on a broker that stopped
    // answering, say) is started again, as an orchestrator's restart policy would: every
    // stage resumes from its committed offsets and its outputs stay exactly-once
    // (docs/reliability.md), so the run still ends with the right numbers.
    let stages = stages(&topics);
    let mut last_print = Instant::now();
    let progress = opts.progress;
    let mut revived: Vec<String> = Vec::new();
    let drained = wait_drained(
        kafka,
        &stages,
        opts.drain_timeout,
        Duration::from_millis(1000),
        |lags| {
            match running.revive() {
                Ok(names) => {
                    for name in names {
                        say(&format!("{name} exited; started again"));
                        revived.push(name);
                    }
                }
                Err(e) => say(&format!("starting an exited component again failed: {e:#}")),
            }
            if progress && last_print.elapsed() > Duration::from_secs(5) {
                last_print = Instant::now();
                let l: Vec<String> = lags.iter().map(|(n, l)| format!("{n} {l}")).collect();
                eprintln!("zt demo: waiting for the pipeline (lag: {})", l.join(", "));
            }
        },
    )
    .await;
    drained.map_err(|e| {
        let died = running.dead();
        let e = if revived.is_empty() {
            e
        } else {
            e.context(format!("components restarted: {}", revived.join(", ")))
        };
        if died.is_empty() {
            e
        } else {
            e.context(format!("components exited: {}", died.join("; ")))
        }
    })?;
    let pipeline = t0.elapsed();
    say(&format!(
        "pipeline drained {:.1} s after the first record was sent",
        pipeline.as_secs_f64()
    ));

    if let Some(path) = &opts.truth_out {
        let doc = json!({ "params": world.params, "truth": world.truth, "prefix": prefix,
                          "database": ch.database });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }

    // Report.
    let report = zt_report::fetch(&ch).await.context("reading the KPIs")?;
    let report_text = zt_report::render_text(&report);
    if let Some(path) = &opts.html {
        std::fs::write(path, zt_report::render_html(&report))
            .with_context(|| format!("writing {}", path.display()))?;
        say(&format!("HTML report written to {}", path.display()));
    }

    if opts.keep_running {
        println!("{report_text}");
        say("components keep running; Ctrl-C stops them");
        std::future::pending::<()>().await;
    }
    running.stop();
    Ok(DemoOutcome {
        prefix,
        truth: world.truth,
        sent,
        pipeline,
        report_text,
        report_errors: report.errors(),
    })
}

/// How to start a [`Pipeline`].
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The `zt` executable.
    pub zt_exe: PathBuf,
    /// Configuration file and logs go here.
    pub work_dir: PathBuf,
    /// ClickHouse database (dropped and re-created).
    pub database: String,
    /// TOML appended to the run's configuration (e.g. `[kafka.producer]` settings for a
    /// benchmark); it must not repeat a table the run's configuration has.
    pub extra_config: Option<String>,
    /// Extra environment per component: (component, variable, value). Variables named in
    /// [`ONE_SHOT_ENV`] apply to the first start only, not to restarts.
    pub env: Vec<(String, String, String)>,
}

/// Environment variables a restarted component does not get again: the test-only crash
/// points (a component that crashed at its failpoint comes back without it).
pub const ONE_SHOT_ENV: [&str; 1] = [zt_sink::failpoint::ENV];

/// The components in pipeline order, with their `zt` arguments.
pub const COMPONENTS: [(&str, &[&str]); 5] = [
    ("ingest", &["ingest"]),
    ("identity", &["process", "identity"]),
    ("profiles", &["process", "profiles"]),
    ("funnels", &["process", "funnels"]),
    ("sink", &["sink"]),
];

/// Every component running on a fresh set of topics and a fresh database; stopped when
/// dropped.
#[derive(Debug)]
pub struct Pipeline {
    /// The run's topic names (prefix `ztdemo-<unix seconds>`).
    pub topics: TopicsConfig,
    /// The topic prefix.
    pub prefix: String,
    /// The run's ClickHouse settings (its own database).
    pub clickhouse: ClickHouseConfig,
    /// Ingest's base URL.
    pub ingest_url: String,
    /// The run's write keys, per source.
    pub keys: BTreeMap<Source, String>,
    /// Metrics port of every component, by name.
    pub admin_ports: Vec<(String, u16)>,
    /// When the run started (UTC ms).
    pub started_ms: i64,
    children: Children,
}

impl Pipeline {
    /// Creates the topics and the database, writes the configuration and starts ingest,
    /// the processors and the sink; returns once every component answers `/readyz`.
    pub async fn start(
        kafka: &KafkaConfig,
        topics: &TopicsConfig,
        clickhouse: &ClickHouseConfig,
        opts: &PipelineOptions,
    ) -> anyhow::Result<Pipeline> {
        let say = |m: &str| eprintln!("zt demo: {m}");
        std::fs::create_dir_all(&opts.work_dir)
            .with_context(|| format!("creating {}", opts.work_dir.display()))?;

        // Topics: a fresh set per run. Earlier runs' sets are left alone: deleting topics
        // on tansu's SQLite engine ran for minutes and stalled every produce meanwhile
        // (seen here); `make clean-stack` resets the local broker.
        let started = now_ms();
        let prefix = format!("{DEMO_PREFIX}{}", started / 1000);
        let mut topics = topics.clone();
        topics.prefix = prefix.clone();
        // Overrides name full topic names, which a per-run prefix never matches.
        topics.partition_overrides.clear();
        zt_kafka::create_topics(kafka, &zt_kafka::platform_topics(&topics))
            .await
            .context("creating the demo's topics (is the broker up?)")?;
        say(&format!("topics created under {prefix}.*"));

        // ClickHouse: a fresh database.
        let db = &opts.database;
        if db.is_empty() || !db.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("database: `{db}` must be letters, digits and `_` only");
        }
        let mut ch = clickhouse.clone();
        ch.database = db.clone();
        ch.server_client()
            .query(&format!("DROP DATABASE IF EXISTS {}", ch.database))
            .execute()
            .await
            .context("dropping the demo database (is ClickHouse up?)")?;
        zt_sink::migrate_command(&ch, &zt_sink::migrate::MigrateOptions::default(), false)
            .await
            .context("migrating the demo database")?;
        say(&format!("ClickHouse database {} migrated", ch.database));

        // The run's configuration and write keys.
        let mut keys = BTreeMap::new();
        for s in Source::ALL {
            let mut raw = [0u8; 16];
            rand::rng().fill_bytes(&mut raw);
            keys.insert(s, format!("demo-{}-{}", s.as_str(), hex::encode(raw)));
        }
        let ingest_port = free_port()?;
        let mut config = demo_config(kafka, &ch, &topics, &keys, ingest_port)?;
        if let Some(extra) = &opts.extra_config {
            config.push('\n');
            config.push_str(extra);
        }
        let config_path = opts.work_dir.join("zt-demo.toml");
        std::fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;

        // The components.
        let mut children = Children {
            exe: opts.zt_exe.clone(),
            config: config_path.clone(),
            procs: Vec::new(),
        };
        let mut admin_ports = Vec::new();
        for (name, args) in COMPONENTS {
            let port = free_port()?;
            let env = opts
                .env
                .iter()
                .filter(|(c, _, _)| c == name)
                .map(|(_, k, v)| (k.clone(), v.clone()))
                .collect();
            children.procs.push(Proc {
                name: name.to_owned(),
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                port,
                env,
                log: opts.work_dir.join(format!("{name}.log")),
                child: None,
                starts: 0,
            });
            children.spawn(name)?;
            admin_ports.push((name.to_owned(), port));
        }
        for (name, port) in &admin_ports {
            children.wait_ready(name, *port, Duration::from_secs(120))?;
        }
        say(&format!(
            "ingest on http://127.0.0.1:{ingest_port}; metrics: {}",
            admin_ports
                .iter()
                .map(|(n, p)| format!("{n} :{p}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok(Pipeline {
            topics,
            prefix,
            clickhouse: ch,
            ingest_url: format!("http://127.0.0.1:{ingest_port}"),
            keys,
            admin_ports,
            started_ms: started,
            children,
        })
    }

    /// Components that exited, with the end of their logs.
    pub fn dead(&mut self) -> Vec<String> {
        self.children.dead()
    }

    /// Stops every component (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        self.children.stop();
    }

    /// `kill -9` of one component; returns once it has exited.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        self.children.kill(name)
    }

    /// Starts a component that exited (or was killed) again, with the same configuration,
    /// metrics port and environment (minus [`ONE_SHOT_ENV`]); its log is appended to.
    /// Returns once it answers `/readyz`.
    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.children.spawn(name)?;
        let port = self.children.proc(name)?.port;
        self.children
            .wait_ready(name, port, Duration::from_secs(120))
    }

    /// Restarts every component that exited, like an orchestrator's restart policy, and
    /// returns their names (without waiting for them to be ready).
    pub fn revive(&mut self) -> anyhow::Result<Vec<String>> {
        let dead: Vec<String> = self
            .children
            .procs
            .iter_mut()
            .filter_map(|p| {
                let exited = p
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                exited.then(|| p.name.clone())
            })
            .collect();
        for name in &dead {
            self.children.spawn(name)?;
        }
        Ok(dead)
    }

    /// How many times each component was started (1 = never restarted).
    pub fn starts(&self) -> Vec<(String, u32)> {
        self.children
            .procs
            .iter()
            .map(|p| (p.name.clone(), p.starts))
            .collect()
    }

    /// A component's log so far.
    pub fn log(&self, name: &str) -> String {
        self.children
            .proc(name)
            .map(|p| std::fs::read_to_string(&p.log).unwrap_or_default())
            .unwrap_or_default()
    }
}

/// The consumer groups of a run and their inputs, in pipeline order.
pub fn stages(t: &TopicsConfig) -> Vec<Stage> {
    let prefix = &t.prefix;
    // The run's configuration leaves `identity.topics` empty: every source topic.
    let sources: Vec<String> = Source::ALL.into_iter().map(|s| t.events(s)).collect();
    vec![
        Stage {
            name: "identity".into(),
            group: format!("{prefix}-identity"),
            topics: sources,
        },
        Stage {
            name: "profiles".into(),
            group: zt_kafka::config::versioned(&format!("{prefix}-profiles"), t.profiles_version),
            topics: zt_process::profiles::inputs(t),
        },
        Stage {
            name: "funnels".into(),
            group: zt_kafka::config::versioned(&format!("{prefix}-funnels"), t.funnels_version),
            topics: zt_process::funnels::inputs(t),
        },
        Stage {
            name: "sink".into(),
            group: format!("{prefix}-sink"),
            topics: sink_topics(t),
        },
    ]
}

fn sink_topics(t: &TopicsConfig) -> Vec<String> {
    vec![
        t.events_resolved(),
        t.identity_links(),
        t.identity_merges(),
        t.profiles(),
        t.funnels(),
    ]
}

/// The run's configuration file (TOML).
fn demo_config(
    kafka: &KafkaConfig,
    ch: &ClickHouseConfig,
    t: &TopicsConfig,
    keys: &BTreeMap<Source, String>,
    ingest_port: u16,
) -> anyhow::Result<String> {
    let p = &t.prefix;
    let mut sources = serde_json::Map::new();
    for (s, k) in keys {
        let digest = hex::encode(Sha256::digest(k.as_bytes()));
        sources.insert(
            s.as_str().to_owned(),
            json!({ "write_keys": [{ "id": format!("demo-{}", s.as_str()), "sha256": digest }] }),
        );
    }
    let doc = json!({
        "kafka": {
            "bootstrap_servers": kafka.bootstrap_servers,
            // Fewer, larger produce requests: tansu's SQLite engine pays per request
            // (INFRA.md: 17k records/s at linger 5 ms, 31k at 100 ms).
            "producer": { "linger_ms": 20 },
            // tansu holds a rebalance open for the full rebalance timeout (librdkafka sends
            // max.poll.interval.ms) while a member that died with kill -9 has not been
            // dropped: with the default 300 s, a restarted component sat without
            // partitions for minutes (the fault matrix, docs/reliability.md). A short
            // rebalance timeout, as INFRA.md advises for this broker (the session timeout
            // stays at 10 s: a busy tansu misses 6 s heartbeats and groups churn).
            "consumer": { "max_poll_interval_ms": 30000 },
        },
        "topics": { "prefix": p, "partitions": t.partitions },
        "clickhouse": { "url": ch.url, "database": ch.database, "user": ch.user },
        // Ingest waits for the broker as long as the producer does: a slow broker then
        // slows the sender down (one request in flight per source) instead of answering
        // 503 after 10 s for records it may still write, which a retry would publish
        // twice (docs/ingest.md, delivery guarantee).
        "ingest": { "listen": format!("127.0.0.1:{ingest_port}"), "sources": sources,
                    "publish_timeout_ms": kafka.producer.message_timeout_ms },
        "identity": { "group_id": format!("{p}-identity") },
        "profiles": { "group_id": format!("{p}-profiles") },
        "funnels": { "group_id": format!("{p}-funnels") },
        // An insert must end well inside max_poll_interval_ms (above).
        "sink": { "group_id": format!("{p}-sink"), "topics": sink_topics(t),
                  "batch_max_age_ms": 500, "insert_timeout_ms": 10000 },
    });
    let mut out = String::from(
        "# Written by `zt demo` for one run: per-run topics, groups and write keys.\n",
    );
    out.push_str(&toml::to_string(&doc).context("rendering the demo configuration")?);
    Ok(out)
}

/// A port to give a component: free now, and below Linux's ephemeral range (32768 and
/// up), which outgoing connections draw from. A port taken from that range (bind to 0)
/// was seen taken by a Kafka connection before the component bound it ("Address already
/// in use", the fault matrix).
pub fn free_port() -> anyhow::Result<u16> {
    for _ in 0..64 {
        let port = 20_000 + (rand::random::<u16>() % 12_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One component process and how to start it again.
struct Proc {
    name: String,
    args: Vec<String>,
    port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

/// The components; stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
struct Children {
    exe: PathBuf,
    config: PathBuf,
    procs: Vec<Proc>,
}

impl std::fmt::Debug for Children {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.procs.iter().map(|p| &p.name))
            .finish()
    }
}

impl Children {
    fn proc(&self, name: &str) -> anyhow::Result<&Proc> {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .with_context(|| format!("no component named {name}"))
    }

    fn proc_mut(&mut self, name: &str) -> anyhow::Result<&mut Proc> {
        self.procs
            .iter_mut()
            .find(|p| p.name == name)
            .with_context(|| format!("no component named {name}"))
    }

    /// Starts `name` (again): a running one is left alone.
    fn spawn(&mut self, name: &str) -> anyhow::Result<()> {
        let (exe, config) = (self.exe.clone(), self.config.clone());
        let p = self.proc_mut(name)?;
        if let Some(c) = p.child.as_mut()
            && matches!(c.try_wait(), Ok(None))
        {
            return Ok(());
        }
        let restart = p.starts > 0;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .with_context(|| format!("opening {}", p.log.display()))?;
        if restart {
            use std::io::Write;
            let _ = writeln!(
                log,
                "===== zt demo: {name} restarted (start {})",
                p.starts + 1
            );
        }
        let mut cmd = Command::new(&exe);
        cmd.arg("--config")
            .arg(&config)
            .args(&p.args)
            .env("ZT__ADMIN__LISTEN", format!("127.0.0.1:{}", p.port))
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        for (k, v) in &p.env {
            if !(restart && ONE_SHOT_ENV.contains(&k.as_str())) {
                cmd.env(k, v);
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} {name}", exe.display()))?;
        p.child = Some(child);
        p.starts += 1;
        Ok(())
    }

    fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let p = self.proc_mut(name)?;
        if let Some(c) = p.child.as_mut() {
            // std's Child::kill is SIGKILL on Unix: no shutdown, no flush, no commit.
            let _ = c.kill();
            c.wait()
                .with_context(|| format!("waiting for {name} to exit"))?;
        }
        Ok(())
    }

    fn wait_ready(&mut self, name: &str, port: u16, patience: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + patience;
        loop {
            let p = self.proc_mut(name)?;
            if let Some(child) = p.child.as_mut()
                && let Ok(Some(st)) = child.try_wait()
            {
                bail!(
                    "{name} exited at start ({st}); its log ({}):\n{}",
                    p.log.display(),
                    tail(&p.log)
                );
            }
            if http_ok(port, "/readyz") {
                return Ok(());
            }
            if Instant::now() > until {
                bail!("{name} was not ready within {patience:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn dead(&mut self) -> Vec<String> {
        self.procs
            .iter_mut()
            .filter_map(|p| match p.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(st))) => Some(format!(
                    "{} ({st}), log {}:\n{}",
                    p.name,
                    p.log.display(),
                    tail(&p.log)
                )),
                _ => None,
            })
            .collect()
    }

    fn stop(&mut self) {
        for p in &self.procs {
            if let Some(c) = &p.child {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(c.id().to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let until = Instant::now() + Duration::from_secs(10);
        for p in &mut self.procs {
            if let Some(c) = p.child.as_mut() {
                while Instant::now() < until && matches!(c.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
            p.child = None;
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A plain HTTP/1.0 GET on 127.0.0.1: true on a 200.
fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_configuration_is_valid_toml_with_the_sink_topics_and_hashed_keys() {
        let d: toml::Value = toml::from_str(include_str!("../../../config/defaults.toml")).unwrap();
        let kafka: KafkaConfig = d["kafka"].clone().try_into().unwrap();
        let ch: ClickHouseConfig = d["clickhouse"].clone().try_into().unwrap();
        let mut t: TopicsConfig = d["topics"].clone().try_into().unwrap();
        t.prefix = "ztdemo-1".into();
        let keys: BTreeMap<Source, String> = Source::ALL
            .into_iter()
            .map(|s| (s, format!("k-{}", s.as_str())))
            .collect();
        let text = demo_config(&kafka, &ch, &t, &keys, 18080).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["sink"]["topics"].as_array().unwrap().len(), 5);
        assert_eq!(v["ingest"]["listen"].as_str(), Some("127.0.0.1:18080"));
        let digest = v["ingest"]["sources"]["erp"]["write_keys"][0]["sha256"]
            .as_str()
            .unwrap();
        assert_eq!(digest, hex::encode(Sha256::digest(b"k-erp")));
        assert!(!text.contains("k-erp"), "a key in clear");
    }
}
