//! `zt chaos`: the fault matrix on the local stack (docs/reliability.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use zt_demo::chaos::{self, ChaosOptions, Control, Fault};

use crate::settings::Settings;

/// Arguments of `zt chaos`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// A fault to run (repeatable): none, kill:<component>:<pct>, restart-broker:<pct>,
    /// restart-clickhouse:<pct>, cut-broker:<pct>:<secs>, cut-clickhouse:<pct>:<secs>.
    /// Without any: the full matrix (every component killed at 10, 50 and 90 %, the broker
    /// and ClickHouse restarted and cut off) and the negative control.
    #[arg(long = "fault", value_name = "FAULT")]
    pub faults: Vec<String>,
    /// The smoke set of the test suite (kill -9 of ingest, identity and the sink at 50 %).
    #[arg(long, conflicts_with = "faults")]
    pub smoke: bool,
    /// Also run the negative control: the sink's resume switched off and a crash before a
    /// commit, which the checks must catch.
    #[arg(long)]
    pub negative_control: bool,
    /// Seed of the generated world.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Persons in the generated world.
    #[arg(long, default_value_t = 200)]
    pub persons: u32,
    /// Days of history.
    #[arg(long, default_value_t = 21)]
    pub days: u32,
    /// Records per second sent, so that each fault lands mid-stream.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// ClickHouse database (dropped and re-created by every run).
    #[arg(long, default_value = "zhongtai_chaos")]
    pub database: String,
    /// Configurations and component logs, one folder per fault.
    #[arg(long, default_value = ".stack/chaos")]
    pub work_dir: PathBuf,
    /// Write the results as a Markdown table here.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Give up waiting for the pipeline to drain after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub drain_timeout: u64,
    /// Start every run on an empty local broker (deploy/local/stack.sh reset-kafka):
    /// forgets every topic and record of the local broker. `make chaos` sets it.
    #[arg(long)]
    pub fresh_broker: bool,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

/// `zt chaos`: exits non-zero when a fault run found a problem or the negative control
/// was not caught.
pub async fn run(settings: &Settings, args: &ChaosArgs) -> anyhow::Result<()> {
    if args.persons == 0 || args.days == 0 || args.rate <= 0.0 {
        bail!("--persons, --days and --rate must be positive");
    }
    let (faults, control) = if args.smoke {
        (chaos::smoke_set(), args.negative_control)
    } else if args.faults.is_empty() {
        (chaos::full_matrix(), true)
    } else {
        let f: anyhow::Result<Vec<Fault>> = args.faults.iter().map(|f| Fault::parse(f)).collect();
        (f?, args.negative_control)
    };
    let script = PathBuf::from("deploy/local/stack.sh");
    let opts = ChaosOptions {
        zt_exe: std::env::current_exe().context("the zt executable's path")?,
        stack_script: script.is_file().then_some(script),
        work_dir: args.work_dir.clone(),
        database: args.database.clone(),
        seed: args.seed,
        persons: args.persons,
        days: args.days,
        rate: args.rate,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        progress: !args.quiet,
        fresh_broker: args.fresh_broker,
    };
    let mut runs: Vec<(Fault, Control)> = faults.into_iter().map(|f| (f, Control::None)).collect();
    if control {
        runs.push((Fault::None, Control::SinkResumeOff));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    // Dropping a run's future drops its pipeline, which stops the components.
    tokio::select! {
        r = run_all(settings, &opts, &runs, args) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; the components were stopped"),
        _ = term.recv() => bail!("terminated; the components were stopped"),
    }
}

async fn run_all(
    settings: &Settings,
    opts: &ChaosOptions,
    runs: &[(Fault, Control)],
    args: &ChaosArgs,
) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for (fault, control) in runs {
        let out = match chaos::run(
            &settings.kafka,
            &settings.topics,
            &settings.clickhouse,
            opts,
            fault,
            *control,
        )
        .await
        {
            Ok(out) => out,
            // A run that could not be completed (the broker did not create the topics, a
            // component never became ready, ...) fails; the sweep goes on with the next.
            Err(e) => chaos::RunOutcome::not_completed(fault, *control, &e),
        };
        if !out.passed() && *control == Control::None {
            for p in &out.problems {
                eprintln!("zt chaos [{}]: {p}", fault.id());
            }
        }
        results.push(out);
    }
    let table = chaos::markdown(&results);
    println!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.completed || r.passed() != (r.control == Control::None))
        .map(|r| r.fault.id())
        .collect();
    if !failed.is_empty() {
        bail!("{} run(s) failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}
