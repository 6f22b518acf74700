//! `zt generate`, `zt demo` and `zt report`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use zt_demo::now_ms;

use anyhow::{Context, bail};
use zt_demo::scenario::{self, Params};
use zt_demo::send::{SendOptions, send};
use zt_model::Source;

use crate::settings::Settings;

/// The generated world's size and seed (`zt generate`, `zt demo`).
#[derive(Debug, Clone, clap::Args)]
pub struct WorldArgs {
    /// Seed of every random choice: the same seed and sizes give the same records.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Persons in the generated world [default: 2000 for generate, 300 for demo].
    #[arg(long)]
    pub persons: Option<u32>,
    /// Days of history (the period ends 15 days ago, so that follow-ups are in the past).
    #[arg(long, default_value_t = 28)]
    pub days: u32,
}

/// Arguments of `zt generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub world: WorldArgs,
    /// At most this many records per second (default: as fast as ingest answers).
    #[arg(long, value_name = "RECORDS_PER_SEC", conflicts_with = "duration")]
    pub rate: Option<f64>,
    /// Spread the records evenly over this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Ingest's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Records per request (at most ingest's `max_batch_events`).
    #[arg(long, default_value_t = 200)]
    pub batch: usize,
    /// TOML or JSON file mapping each source to its write key
    /// (`erp = "..."`); else `ZT_GENERATE_KEY_<SOURCE>` environment variables.
    #[arg(long, value_name = "FILE")]
    pub keys_file: Option<PathBuf>,
    /// Write the ground truth (JSON) here.
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// Print the records as NDJSON (`{"source": ..., "record": ...}`) instead of sending.
    #[arg(long)]
    pub print: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn keys(args: &GenerateArgs) -> anyhow::Result<BTreeMap<Source, String>> {
    let mut out = BTreeMap::new();
    if let Some(path) = &args.keys_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let map: BTreeMap<String, String> = if text.trim_start().starts_with('{') {
            serde_json::from_str(&text).context("keys file: a JSON object source -> key")?
        } else {
            toml::from_str(&text).context("keys file: a TOML table source = key")?
        };
        for (name, key) in map {
            let source = Source::ALL
                .into_iter()
                .find(|s| s.as_str() == name)
                .with_context(|| format!("keys file: `{name}` is not a source"))?;
            out.insert(source, key);
        }
    }
    for s in Source::ALL {
        let var = format!("ZT_GENERATE_KEY_{}", s.as_str().to_uppercase());
        if let Ok(k) = std::env::var(&var)
            && !k.is_empty()
        {
            out.insert(s, k);
        }
    }
    Ok(out)
}

/// `zt generate`.
pub async fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    let persons = args.world.persons.unwrap_or(2000);
    if persons == 0 || args.world.days == 0 {
        bail!("--persons and --days must be at least 1");
    }
    let world = scenario::generate(Params::new(
        args.world.seed,
        persons,
        args.world.days,
        now_ms(),
    ));
    if let Some(path) = &args.truth {
        let doc = serde_json::json!({ "params": world.params, "truth": world.truth });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.print {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for r in &world.records {
            let line = serde_json::json!({ "source": r.source.as_str(), "record": r.body });
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    let rate = match (args.rate, args.duration) {
        (Some(r), _) => Some(r),
        (None, Some(d)) if d > 0.0 => Some(world.records.len() as f64 / d),
        _ => None,
    };
    let keys = keys(args)?;
    eprintln!(
        "zt generate: {} records for {} persons over {} days (seed {}) to {}",
        world.records.len(),
        persons,
        args.world.days,
        args.world.seed,
        args.url
    );
    let report = send(
        &world.records,
        &SendOptions {
            url: args.url.clone(),
            keys,
            batch: args.batch,
            rate,
            progress: !args.quiet,
            record_acks: false,
            progress_counter: None,
        },
    )
    .await?;
    println!("{}", report.summary());
    for r in &report.first_rejections {
        println!("rejected: {r}");
    }
    if report.rejected > 0 {
        bail!("{} records were rejected", report.rejected);
    }
    Ok(())
}

/// Arguments of `zt demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub world: WorldArgs,
    /// At most this many records per second; 0 sends as fast as ingest answers. The
    /// local stack's SQLite broker carries a few hundred records per second through the
    /// whole pipeline (docs/demo.md).
    #[arg(long, value_name = "RECORDS_PER_SEC", default_value_t = 1000.0)]
    pub rate: f64,
    /// ClickHouse database of the run: dropped and re-created.
    #[arg(long, default_value = "zhongtai_demo")]
    pub database: String,
    /// Also write the report as a self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the generator's ground truth (JSON) here.
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    /// Use the broker and ClickHouse that are running; do not run deploy/local/stack.sh.
    #[arg(long)]
    pub no_stack: bool,
    /// Leave the components running after the report, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// Configuration and component logs of the run.
    #[arg(long, default_value = ".stack/demo")]
    pub work_dir: PathBuf,
    /// Give up waiting for the pipeline to drain after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub drain_timeout: u64,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

/// `zt demo`.
pub async fn demo(settings: &Settings, args: &DemoArgs) -> anyhow::Result<()> {
    let stack_script = PathBuf::from("deploy/local/stack.sh");
    let stack_script = if args.no_stack {
        None
    } else if stack_script.is_file() {
        Some(stack_script)
    } else {
        eprintln!(
            "zt demo: deploy/local/stack.sh not found here; using the broker and ClickHouse of the configuration"
        );
        None
    };
    let opts = zt_demo::DemoOptions {
        zt_exe: std::env::current_exe().context("the zt executable's path")?,
        stack_script,
        work_dir: args.work_dir.clone(),
        seed: args.world.seed,
        persons: args.world.persons.unwrap_or(300),
        days: args.world.days,
        rate: (args.rate > 0.0).then_some(args.rate),
        database: args.database.clone(),
        html: args.html.clone(),
        truth_out: args.truth.clone(),
        keep_running: args.keep_running,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        progress: !args.quiet,
    };
    let out = zt_demo::demo::run(
        &settings.kafka,
        &settings.topics,
        &settings.clickhouse,
        &opts,
    )
    .await?;
    if !args.keep_running {
        println!("{}", out.report_text);
    }
    println!(
        "The run's data stays in ClickHouse database `{}` (kpi_* views; docs/bi.md) and on topics {}.*; component logs in {}.",
        args.database,
        out.prefix,
        args.work_dir.display()
    );
    if !out.report_errors.is_empty() {
        let names: Vec<&str> = out.report_errors.iter().map(|(v, _)| v.as_str()).collect();
        bail!("report sections could not be read: {}", names.join(", "));
    }
    Ok(())
}

/// Arguments of `zt report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Also write the report as a self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Read this database instead of `clickhouse.database`.
    #[arg(long)]
    pub database: Option<String>,
}

/// `zt report`.
pub async fn report(settings: &Settings, args: &ReportArgs) -> anyhow::Result<()> {
    let mut ch = settings.clickhouse.clone();
    if let Some(db) = &args.database {
        ch.database = db.clone();
    }
    let r = zt_report::fetch(&ch).await?;
    print!("{}", zt_report::render_text(&r));
    if let Some(path) = &args.html {
        std::fs::write(path, zt_report::render_html(&r))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("HTML report written to {}", path.display());
    }
    let failed = r.errors();
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|(view, _)| view.as_str()).collect();
        bail!(
            "{} section(s) could not be read: {} (is the database migrated? `zt migrate`)",
            failed.len(),
            names.join(", ")
        );
    }
    Ok(())
}
