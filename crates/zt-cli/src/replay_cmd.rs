//! `zt replay dlq list|run`: the arguments and the printed reports (the work is in
//! `zt-ops`). Nothing printed carries input values: ids, sources, reasons, fields,
//! ingest's messages and counts only.

use std::fmt::Write as _;

use clap::Subcommand;
use zt_model::Source;
use zt_ops::replay::{ListReport, RunReport};
use zt_ops::{Filter, Outcome, ReplayParams, RunOptions, parse_time};

use crate::settings::Settings;

/// `zt replay ...`.
#[derive(Debug, Subcommand)]
pub enum ReplayCmd {
    /// The dead letters on <prefix>.dlq: list them, or re-submit them through the current
    /// normalisers after a configuration fix (docs/operations.md).
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// Rebuild the profiles or funnels processor's output from its inputs as a new output
    /// version, next to the live one, then switch the readers over (docs/operations.md,
    /// "Backfill").
    #[command(subcommand)]
    Backfill(BackfillCmd),
}

/// `zt replay backfill ...`.
#[derive(Debug, Subcommand)]
pub enum BackfillCmd {
    /// Step 1: create the new version's topics, start its consumer group at --from, and run
    /// the processor (this configuration's [profiles] or [funnels] section) in this process
    /// until it has caught up with its inputs. The live version keeps running. Run again
    /// after an interruption: it continues where it stopped.
    Run(BackfillRunArgs),
    /// Step 3, after the processor and the sink were switched to the new version
    /// (topics.<processor>_version): wait until the sink has loaded the new version, then
    /// delete every other version's rows from the processor's ClickHouse tables.
    Finish(BackfillFinishArgs),
}

/// `zt replay backfill run`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackfillRunArgs {
    /// profiles or funnels.
    #[arg(value_name = "PROCESSOR")]
    pub processor: zt_ops::backfill::Output,
    /// The new output version: above the configured topics.<processor>_version.
    #[arg(long)]
    pub version: u32,
    /// Where to start reading the inputs: `beginning` (every retained record; the default,
    /// and what profiles and funnels need to be complete), or a time (RFC 3339 or unix ms):
    /// the first record at or after it.
    #[arg(long, value_name = "beginning|TIME", default_value = "beginning", value_parser = parse_start)]
    pub from: zt_ops::backfill::Start,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `zt replay backfill finish`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackfillFinishArgs {
    /// profiles or funnels.
    #[arg(value_name = "PROCESSOR")]
    pub processor: zt_ops::backfill::Output,
    /// The version the configuration now names.
    #[arg(long)]
    pub version: u32,
    /// Longest wait for the sink to load the new version, in seconds.
    #[arg(long, default_value_t = 600)]
    pub wait_secs: u64,
}

fn parse_start(s: &str) -> Result<zt_ops::backfill::Start, String> {
    if s == "beginning" {
        Ok(zt_ops::backfill::Start::Beginning)
    } else {
        parse_time(s).map(zt_ops::backfill::Start::Time)
    }
}

/// `zt replay dlq ...`.
#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// Count the selected dead letters by source, reason and day (UTC, of failed_at), with
    /// the first messages per reason and how many were replayed already.
    List(FilterArgs),
    /// Re-submit the selected dead letters of stage ingest through the current
    /// normalisers: publish what now normalises, keep what still fails (with a new dead
    /// letter when its reason changed), and mark each replayed dead letter so that a second
    /// run does not publish it again.
    Run(RunArgs),
}

/// Which dead letters (every option may be repeated where it takes a list).
#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    /// Only this source (crm, erp, logistics, tracking, service, marketing, unknown);
    /// repeatable.
    #[arg(long = "source", value_name = "SOURCE", value_parser = parse_source)]
    pub sources: Vec<String>,
    /// Only this reason (missing_field, rate_limited, ...); repeatable. `run` replays
    /// rate_limited, bad_key and wrong_source_key dead letters only when named here (or
    /// with --id).
    #[arg(long = "reason", value_name = "REASON")]
    pub reasons: Vec<String>,
    /// Only this stage; `all` for every stage. Only stage ingest can be replayed.
    #[arg(long, value_name = "STAGE", default_value = "ingest")]
    pub stage: String,
    /// Failed at or after this time: RFC 3339 (2026-06-18T00:00:00+08:00) or unix ms.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<i64>,
    /// Failed before this time: RFC 3339 or unix ms.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<i64>,
    /// Only this dead letter (its dlq_id); repeatable.
    #[arg(long = "id", value_name = "DLQ_ID")]
    pub ids: Vec<String>,
}

/// `zt replay dlq run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Normalise and report what would happen; produce nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Replay dead letters whose earlier replay failed (in part) too.
    #[arg(long)]
    pub retry_failed: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

fn parse_source(s: &str) -> Result<String, String> {
    if s == "unknown" || s.parse::<Source>().is_ok() {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a source: crm, erp, logistics, tracking, service, marketing or unknown"
        ))
    }
}

impl FilterArgs {
    /// The filter these arguments describe.
    pub fn filter(&self) -> Filter {
        Filter {
            sources: self.sources.clone(),
            reasons: self.reasons.clone(),
            stage: Some(self.stage.clone()),
            since: self.since,
            until: self.until,
            ids: self.ids.clone(),
        }
    }
}

/// Runs `zt replay ...`.
pub async fn run(settings: &Settings, cmd: ReplayCmd) -> anyhow::Result<()> {
    let cmd = match cmd {
        ReplayCmd::Dlq(cmd) => cmd,
        ReplayCmd::Backfill(cmd) => return backfill(settings, cmd).await,
    };
    match cmd {
        DlqCmd::List(f) => {
            let report = zt_ops::list(&settings.kafka, &settings.topics, &f.filter()).await?;
            print!("{}", render_list(&report, &f.stage));
            Ok(())
        }
        DlqCmd::Run(a) => {
            let params = ReplayParams {
                kafka: settings.kafka.clone(),
                topics: settings.topics.clone(),
                ingest: settings.ingest.clone(),
                hasher: settings.pii.hasher()?,
            };
            let opts = RunOptions {
                filter: a.filter.filter(),
                dry_run: a.dry_run,
                retry_failed: a.retry_failed,
                progress: !a.quiet,
                ignore_markers: false,
            };
            let report = zt_ops::run(&params, &opts).await?;
            print!("{}", render_run(&report));
            if report.ok() {
                Ok(())
            } else {
                anyhow::bail!(
                    "{} dead letters were not published completely and {} markers were not \
                     acknowledged; run the same command again (see docs/operations.md)",
                    report.publish_errors.len(),
                    report.marker_errors
                )
            }
        }
    }
}

async fn backfill(settings: &Settings, cmd: BackfillCmd) -> anyhow::Result<()> {
    let params = zt_ops::backfill::BackfillParams {
        kafka: settings.kafka.clone(),
        topics: settings.topics.clone(),
        profiles: settings.profiles.clone(),
        funnels: settings.funnels.clone(),
        clickhouse: settings.clickhouse.clone(),
        sink_group: settings.sink.group_id.clone(),
    };
    match cmd {
        BackfillCmd::Run(a) => {
            let shutdown = zt_runtime::Shutdown::install()?;
            let r =
                zt_ops::backfill::run(&params, a.processor, a.version, a.from, !a.quiet, &shutdown)
                    .await?;
            print!("{}", render_backfill_run(&r));
        }
        BackfillCmd::Finish(a) => {
            let r = zt_ops::backfill::finish(
                &params,
                a.processor,
                a.version,
                std::time::Duration::from_secs(a.wait_secs),
            )
            .await?;
            print!("{}", render_backfill_finish(&r));
        }
    }
    Ok(())
}

/// The text of `zt replay backfill run`.
pub fn render_backfill_run(r: &zt_ops::backfill::RunReport) -> String {
    let name = r.output.name();
    let mut out = String::new();
    if !r.created.is_empty() {
        let _ = writeln!(out, "created: {}", r.created.join(", "));
    }
    let _ = writeln!(
        out,
        "{name} version {}: group {} {} and caught up: {} input records in {:.1} s",
        r.version,
        r.group,
        if r.fresh { "started" } else { "continued" },
        r.records,
        r.seconds
    );
    let _ = writeln!(
        out,
        "next: set topics.{name}_version = {v} for `zt process {name}` and `zt sink`, restart          both, then run `zt replay backfill finish {name} --version {v}`",
        v = r.version
    );
    out
}

/// The text of `zt replay backfill finish`.
pub fn render_backfill_finish(r: &zt_ops::backfill::FinishReport) -> String {
    let mut out = String::new();
    for (table, deleted, kept) in &r.tables {
        let _ = writeln!(
            out,
            "{table}: {deleted} rows of other versions deleted, {kept} rows of {} kept",
            r.topic
        );
    }
    let _ = writeln!(
        out,
        "{} version {} is the only one in ClickHouse; older topics, to delete when no other          reader needs them: {}",
        r.output.name(),
        r.version,
        r.old_topics.join(", ")
    );
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn counts<K: std::fmt::Display>(m: impl IntoIterator<Item = (K, usize)>) -> String {
    m.into_iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text of `zt replay dlq list`.
pub fn render_list(r: &ListReport, stage: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} read, {} distinct ({} kept again by retried requests), {} undecodable",
        r.topic,
        plural(r.records, "record", "records"),
        r.distinct,
        r.records - r.undecodable - r.distinct,
        r.undecodable
    );
    let _ = writeln!(out, "selected (stage {stage}): {}", r.selected);
    if r.markers_missing {
        let _ = writeln!(
            out,
            "warning: no markers topic (zt topics create); nothing counts as replayed"
        );
    }
    if r.rows.is_empty() {
        return out;
    }
    let w_src = r
        .rows
        .iter()
        .map(|x| x.source.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let w_rsn = r
        .rows
        .iter()
        .map(|x| x.reason.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let _ = writeln!(
        out,
        "\n{:<w_src$}  {:<w_rsn$}  {:<10}  {:>12}  {:>9}  {:>6}",
        "source", "reason", "day (UTC)", "dead letters", "published", "failed"
    );
    for x in &r.rows {
        let _ = writeln!(
            out,
            "{:<w_src$}  {:<w_rsn$}  {:<10}  {:>12}  {:>9}  {:>6}",
            x.source, x.reason, x.day, x.count, x.published, x.failed
        );
    }
    let _ = writeln!(out, "\nfirst messages by reason:");
    for m in &r.messages {
        let _ = writeln!(out, "  {} ({})", m.reason, m.count);
        for (field, msg, n) in &m.messages {
            let _ = match field {
                Some(f) => writeln!(out, "    {f}: {msg}  ×{n}"),
                None => writeln!(out, "    {msg}  ×{n}"),
            };
        }
    }
    let _ = writeln!(
        out,
        "\nreplayed already: {} published, {} partial, {} failed",
        r.markers.get(&Outcome::Published).copied().unwrap_or(0),
        r.markers.get(&Outcome::Partial).copied().unwrap_or(0),
        r.markers.get(&Outcome::Failed).copied().unwrap_or(0),
    );
    if !r.needs_naming.is_empty() {
        let _ = writeln!(
            out,
            "replayed by `run` only when named with --reason or --id: {}",
            counts(r.needs_naming.iter().map(|(k, v)| (k, *v)))
        );
    }
    if !r.other_stages.is_empty() {
        let _ = writeln!(
            out,
            "not replayable (only stage ingest is): {}",
            counts(r.other_stages.iter().map(|(k, v)| (k, *v)))
        );
    }
    out
}

/// The text of `zt replay dlq run`.
pub fn render_run(r: &RunReport) -> String {
    let mut out = String::new();
    let verb = if r.dry_run { "would be" } else { "were" };
    if r.dry_run {
        let _ = writeln!(out, "dry run: nothing was produced");
    }
    let _ = writeln!(
        out,
        "selected {} ({} read); skipped: {} replayed before, {} not named (--reason/--id){}, {} not replayable",
        plural(r.selected, "dead letter", "dead letters"),
        plural(r.records, "record", "records"),
        r.already_replayed,
        r.needs_naming.values().sum::<usize>(),
        if r.needs_naming.is_empty() {
            String::new()
        } else {
            format!(" [{}]", counts(r.needs_naming.iter().map(|(k, v)| (k, *v))))
        },
        r.not_replayable.len(),
    );
    let _ = writeln!(
        out,
        "replayed: {} ({} published, {} partial, {} failed)",
        r.replayed(),
        r.outcomes.get(&Outcome::Published).copied().unwrap_or(0),
        r.outcomes.get(&Outcome::Partial).copied().unwrap_or(0),
        r.outcomes.get(&Outcome::Failed).copied().unwrap_or(0),
    );
    let total: usize = r.published.values().sum();
    let _ = writeln!(
        out,
        "events that {verb} published: {total}{}; already published, not again: {}; of erased persons, never: {}",
        if r.published.is_empty() {
            String::new()
        } else {
            format!(" ({})", counts(r.published.iter().map(|(k, v)| (k, *v))))
        },
        r.already_published,
        r.suppressed
    );
    let failing: usize = r.still_failing.values().sum();
    let _ = writeln!(
        out,
        "items still failing: {failing}; new dead letters (reason changed) that {verb} written: {}",
        r.new_dead_letters
    );
    for ((reason, field), n) in &r.still_failing {
        let _ = writeln!(
            out,
            "  {reason}{}  ×{n}",
            field
                .as_deref()
                .map(|f| format!(" {f}"))
                .unwrap_or_default()
        );
    }
    if !r.first_failures.is_empty() {
        let _ = writeln!(out, "first failures:");
        for f in &r.first_failures {
            let _ = writeln!(
                out,
                "  {}  {}  {}{}: {}",
                f.dlq_id,
                f.source,
                f.reason,
                f.field
                    .as_deref()
                    .map(|x| format!(" {x}"))
                    .unwrap_or_default(),
                f.message
            );
        }
    }
    if !r.not_replayable.is_empty() {
        let _ = writeln!(out, "not replayable:");
        for (id, why) in r.not_replayable.iter().take(10) {
            let _ = writeln!(out, "  {id}  {why}");
        }
        if r.not_replayable.len() > 10 {
            let _ = writeln!(out, "  ... and {} more", r.not_replayable.len() - 10);
        }
    }
    for (id, e) in r.publish_errors.iter().take(10) {
        let _ = writeln!(out, "not acknowledged: {id}  {e}");
    }
    if r.undecodable > 0 {
        let _ = writeln!(
            out,
            "{} records on the topic are not dead letters",
            r.undecodable
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use zt_ops::replay::{Failure, ListRow, ReasonMessages};

    #[test]
    fn list_prints_counts_and_messages() {
        let r = ListReport {
            topic: "zt.dlq".into(),
            records: 5,
            undecodable: 0,
            distinct: 4,
            selected: 4,
            rows: vec![ListRow {
                source: "erp".into(),
                reason: "missing_field".into(),
                day: "2026-06-18".into(),
                count: 4,
                published: 3,
                failed: 1,
            }],
            messages: vec![ReasonMessages {
                reason: "missing_field".into(),
                count: 4,
                messages: vec![(Some("order_id".into()), "is required".into(), 4)],
            }],
            markers: BTreeMap::from([(Outcome::Published, 3), (Outcome::Failed, 1)]),
            needs_naming: BTreeMap::from([("rate_limited".into(), 2)]),
            other_stages: BTreeMap::new(),
            markers_missing: false,
        };
        let s = render_list(&r, "ingest");
        assert!(
            s.contains("5 records read, 4 distinct (1 kept again"),
            "{s}"
        );
        assert!(s.contains("erp     missing_field  2026-06-18"), "{s}");
        assert!(s.contains("order_id: is required  ×4"), "{s}");
        assert!(s.contains("3 published, 0 partial, 1 failed"), "{s}");
        assert!(s.contains("--reason or --id: rate_limited 2"), "{s}");
    }

    #[test]
    fn run_prints_outcomes_and_failures() {
        let r = RunReport {
            dry_run: true,
            records: 3,
            selected: 3,
            outcomes: BTreeMap::from([(Outcome::Published, 2), (Outcome::Failed, 1)]),
            published: BTreeMap::from([("erp".into(), 4)]),
            still_failing: BTreeMap::from([(("invalid_value".into(), Some("total".into())), 1)]),
            new_dead_letters: 1,
            first_failures: vec![Failure {
                dlq_id: "d1".into(),
                source: "erp".into(),
                reason: "invalid_value".into(),
                field: Some("total".into()),
                message: "must be whole minor units (fen)".into(),
            }],
            ..RunReport::default()
        };
        let s = render_run(&r);
        assert!(s.starts_with("dry run: nothing was produced"), "{s}");
        assert!(
            s.contains("replayed: 3 (2 published, 0 partial, 1 failed)"),
            "{s}"
        );
        assert!(
            s.contains("events that would be published: 4 (erp 4)"),
            "{s}"
        );
        assert!(s.contains("  invalid_value total  ×1"), "{s}");
        assert!(
            s.contains("d1  erp  invalid_value total: must be whole"),
            "{s}"
        );
    }

    #[test]
    fn sources_are_checked() {
        assert!(parse_source("erp").is_ok() && parse_source("unknown").is_ok());
        assert!(parse_source("pos").is_err());
    }
}
