//! `zt`: zhongtai's one binary. Each subcommand is a component or an operator tool; see
//! `zt --help` and README.md.

/// mimalloc instead of the system allocator: the sink's decode thread allocates what its
/// tokio task frees, and with glibc's arenas that cross-thread traffic was about a third of
/// the decode thread's time (docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zt_cli::{Settings, chaos_cmd, demo_cmd, erase_cmd, ingest_cmd, replay_cmd, topics_cmd};

#[derive(Debug, Parser)]
#[command(
    name = "zt",
    version,
    about = "zhongtai: event-streaming customer data platform for e-commerce"
)]
struct Cli {
    /// TOML configuration file, layered over the built-in defaults and under ZT__* env vars.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "ZT_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Manage the platform's Kafka topics.
    #[command(subcommand)]
    Topics(TopicsCmd),
    /// Run the HTTP ingest service (native sources, Segment API, schema registry reads).
    Ingest(IngestArgs),
    /// Apply the versioned ClickHouse DDL (schemas/clickhouse/) in order; idempotent.
    Migrate(MigrateArgs),
    /// Load the event topics into ClickHouse, effectively once (docs/sink.md).
    Sink,
    /// Run a stream processor (docs/identity.md, docs/profiles.md).
    #[command(subcommand)]
    Process(ProcessCmd),
    /// Send seeded synthetic e-commerce traffic for all six sources to ingest over HTTP
    /// (docs/demo.md).
    Generate(demo_cmd::GenerateArgs),
    /// The whole platform on the local stack: stack, topics, migrations, every component,
    /// generated traffic, then the KPI report (docs/demo.md).
    Demo(demo_cmd::DemoArgs),
    /// The KPIs from ClickHouse as terminal tables, and optionally an HTML page
    /// (docs/report.md).
    Report(demo_cmd::ReportArgs),
    /// The fault matrix: the whole pipeline on the local stack, one fault per run (kill -9,
    /// broker and ClickHouse restarts and cut-offs), checked for exactly-once
    /// (docs/reliability.md).
    Chaos(chaos_cmd::ChaosArgs),
    /// Replay dead letters through the current normalisers after a configuration fix
    /// (docs/operations.md).
    #[command(subcommand)]
    Replay(replay_cmd::ReplayCmd),
    /// Erase persons and identifiers (PIPL / GDPR): suppress them, delete their rows from
    /// ClickHouse, tombstone their compacted records, write an audit record
    /// (docs/erasure.md). Prints the plan and refuses without --yes.
    Erase(erase_cmd::EraseArgs),
}

#[derive(Debug, Subcommand)]
enum ProcessCmd {
    /// Resolve every event to a person; publish zt.events.resolved, links and merges.
    Identity,
    /// Keep one live profile per person; publish snapshots to zt.profiles.
    Profiles,
    /// Keep funnels and A/B experiments per person in event time; publish rows to zt.funnels.
    Funnels,
}

#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// Print what is applied and every statement that would run; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Render for this cluster (ON CLUSTER, Replicated*MergeTree, Distributed); overrides
    /// `clickhouse.cluster`.
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    /// Read the DDL files from this directory instead of the ones built into `zt`.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct IngestArgs {
    #[command(subcommand)]
    command: Option<IngestCmd>,
}

#[derive(Debug, Subcommand)]
enum IngestCmd {
    /// Print the SHA-256 digest of a write key, for `ingest.sources.<source>.write_keys`.
    HashKey {
        /// The write key.
        key: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Print the effective configuration (secrets redacted); exit non-zero if it is invalid.
    Check,
}

#[derive(Debug, Subcommand)]
enum TopicsCmd {
    /// Create every platform topic that does not exist yet (idempotent).
    Create,
    /// List the broker's topics with their partition counts.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: invalid configuration: {e:#}");
            return ExitCode::from(2);
        }
    };
    let mut log = settings.log.clone();
    if matches!(
        cli.command,
        Command::Generate(_) | Command::Demo(_) | Command::Report(_) | Command::Chaos(_)
    ) && std::env::var_os("ZT__LOG__LEVEL").is_none()
    {
        // Interactive tools print their own progress; the library's info lines (each
        // migration applied, ...) would bury it. ZT__LOG__LEVEL brings them back.
        log.level = "warn".into();
    }
    zt_runtime::telemetry::init(&log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Config(ConfigCmd::Check) => {
            print!("{}", settings.to_redacted_toml());
            if settings.pii.uses_dev_salt() {
                eprintln!(
                    "warning: pii.salt is the local-development default; set ZT__PII__SALT in every real deployment"
                );
            }
            eprintln!("configuration ok");
            Ok(())
        }
        Command::Topics(TopicsCmd::Create) => topics_cmd::create(&settings).await,
        Command::Topics(TopicsCmd::List) => topics_cmd::list(&settings).await,
        Command::Ingest(IngestArgs { command: None }) => ingest_cmd::run(&settings).await,
        Command::Migrate(a) => {
            let opts = zt_sink::migrate::MigrateOptions {
                cluster: a.cluster,
                dir: a.dir,
            };
            print!(
                "{}",
                zt_sink::migrate_command(&settings.clickhouse, &opts, a.dry_run).await?
            );
            Ok(())
        }
        Command::Process(which) => {
            let s = settings;
            let which = match which {
                ProcessCmd::Identity => zt_process::Which::Identity(zt_process::IdentityParams {
                    kafka: s.kafka,
                    topics: s.topics,
                    identity: s.identity,
                }),
                ProcessCmd::Profiles => zt_process::Which::Profiles(zt_process::ProfilesParams {
                    kafka: s.kafka,
                    topics: s.topics,
                    profiles: s.profiles,
                }),
                ProcessCmd::Funnels => zt_process::Which::Funnels(zt_process::FunnelsParams {
                    kafka: s.kafka,
                    topics: s.topics,
                    funnels: s.funnels,
                }),
            };
            zt_process::serve(&s.admin, which).await
        }
        Command::Sink => {
            let s = settings;
            let params = zt_sink::SinkParams::new(s.kafka, &s.topics, s.clickhouse, s.sink);
            Ok(zt_sink::serve(&s.admin, params).await?)
        }
        Command::Generate(a) => demo_cmd::generate(&a).await,
        Command::Demo(a) => demo_cmd::demo(&settings, &a).await,
        Command::Report(a) => demo_cmd::report(&settings, &a).await,
        Command::Chaos(a) => chaos_cmd::run(&settings, &a).await,
        Command::Replay(c) => replay_cmd::run(&settings, c).await,
        Command::Erase(a) => erase_cmd::run(&settings, &a).await,
        Command::Ingest(IngestArgs {
            command: Some(IngestCmd::HashKey { key }),
        }) => {
            ingest_cmd::print_hash(&key);
            Ok(())
        }
    }
}
