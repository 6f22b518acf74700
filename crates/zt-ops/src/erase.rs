//! `zt erase`: erasure of persons and identifiers (PIPL / GDPR), docs/erasure.md.
//!
//! One erasure runs five steps, in this order:
//!
//! 1. **Resolve** the request's identifiers (phones and e-mails already salted hashes) to
//!    persons through ClickHouse's `identity_links`, add the requested person ids and every
//!    person connected to those through `identity_merges` (both directions, to a fixed
//!    point), then every identifier linked to any of those persons. The request's own
//!    identifiers stay in the set even when no link names them.
//! 2. **Suppress**: one record per identifier of a suppressible kind
//!    ([`zt_kafka::suppress::KINDS`], person ids included) on `<prefix>.suppressions`, so
//!    that nothing new about the person lands while the rest runs and nothing old comes
//!    back later.
//! 3. **Delete** the rows naming any of them from every ClickHouse table with person
//!    columns ([`TABLES`]): `ALTER TABLE ... DELETE` mutations (asynchronous on ClickHouse
//!    18.16), waited for through `system.mutations`; then counted again, and deleted again
//!    when rows arrived meanwhile (at most three rounds).
//! 4. **Tombstones** on the compacted topics keyed by person (`profiles`,
//!    `profiles.state`, `funnels.state`) and on `identity.links` (`<kind>:<value>`).
//! 5. **Audit**: one record on `<prefix>.erasures` with counts and the SHA-256 of the
//!    request, never an identifier.
//!
//! A dry run does step 1 and counts the rows of step 3; it writes nothing anywhere.
//!
//! Nothing here logs, prints or writes an identifier or a person id outside the
//! suppression list (whose keys are SHA-256 digests) and the tombstones' keys.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::replay::now_ms;

use anyhow::{Context as _, bail};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde::Serialize;
use sha2::{Digest, Sha256};
use zt_kafka::suppress;
use zt_kafka::{KafkaConfig, TopicsConfig};
use zt_sink::config::ClickHouseConfig;

/// The kind of a person id in a suppression, the request hash and [`ErasureSet`].
pub const PERSON: &str = "person_id";

/// Identifier kinds a request may name besides person ids: the suppressible ones and the
/// identity graph's other kinds (erased through their person only).
pub const REQUEST_KINDS: [&str; 8] = [
    "crm_customer_id",
    "user_id",
    "anonymous_id",
    "phone_hash",
    "email_hash",
    "order_id",
    "waybill_no",
    "ticket_id",
];

/// How long the deletes of one erasure may take before it fails.
pub const MUTATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Most delete rounds (a round deletes, waits, and counts again).
const DELETE_ROUNDS: usize = 3;

/// Most rounds of following merges (a chain longer than this is not a real person).
const MERGE_ROUNDS: usize = 64;

/// What to erase: person ids and identifiers, phones and e-mails already hashed with the
/// deployment's salt (`phone_hash`, `email_hash`), exactly as ingest stores them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EraseRequest {
    /// Person ids.
    pub persons: Vec<String>,
    /// `(kind, value)` pairs; kind one of [`REQUEST_KINDS`].
    pub identifiers: Vec<(String, String)>,
}

impl EraseRequest {
    /// Checks that something is named, that kinds are known and that no value is empty.
    /// Errors name the kind, never the value.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.persons.is_empty() && self.identifiers.is_empty() {
            bail!("nothing to erase: name at least one person or identifier");
        }
        if self.persons.iter().any(|p| p.trim().is_empty()) {
            bail!("{PERSON}: a value is empty");
        }
        for (kind, value) in &self.identifiers {
            if !REQUEST_KINDS.contains(&kind.as_str()) {
                bail!(
                    "unknown identifier kind {kind:?}: one of {}",
                    REQUEST_KINDS.join(", ")
                );
            }
            if value.trim().is_empty() {
                bail!("{kind}: a value is empty");
            }
        }
        Ok(())
    }
}

/// The SHA-256 (hex) of the canonical request: the sorted, de-duplicated `kind:value`
/// lines of its selectors (`person_id:<id>` for persons), joined by `\n`. Phones and
/// e-mails are in it as their salted hashes only, so the raw values are never stored;
/// the same request in any order gives the same digest.
pub fn request_sha256(req: &EraseRequest) -> String {
    let lines: BTreeSet<String> = req
        .persons
        .iter()
        .map(|p| format!("{PERSON}:{p}"))
        .chain(req.identifiers.iter().map(|(k, v)| format!("{k}:{v}")))
        .collect();
    let joined = lines.into_iter().collect::<Vec<_>>().join("\n");
    hex::encode(Sha256::digest(joined.as_bytes()))
}

/// The outcome of an erasure (or of a dry run: what it would do). Counts only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ErasureReport {
    /// The erasure's id (`er-<UTC time>-<random>`); the audit record's key. A dry run gets
    /// one too, which is not written anywhere.
    pub erasure_id: String,
    /// True when nothing was written.
    pub dry_run: bool,
    /// Persons erased (the requested ones, those found through identifiers and merges).
    pub persons: usize,
    /// Identifiers erased besides person ids (given ones and those linked to the persons).
    pub identifiers: usize,
    /// Suppression records written (would be written, in a dry run).
    pub suppressed: usize,
    /// Rows deleted per table (that would be deleted, in a dry run), counted before
    /// deleting (plus those a further round deleted, see [`erase`]).
    pub rows_deleted: BTreeMap<String, u64>,
    /// Tombstones written (would be written).
    pub tombstones: usize,
    /// Tables of [`TABLES`] missing from the database (older migration), not touched.
    pub skipped_tables: Vec<String>,
}

impl ErasureReport {
    /// All rows deleted.
    pub fn rows_total(&self) -> u64 {
        self.rows_deleted.values().sum()
    }
}

/// The set an erasure works on: values by kind, person ids under [`PERSON`]. Empty values
/// are never kept (an empty value in a condition would match every row without it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasureSet {
    by_kind: BTreeMap<String, BTreeSet<String>>,
}

impl ErasureSet {
    /// Adds one value; empty ones are ignored. True when it was new.
    pub fn insert(&mut self, kind: &str, value: &str) -> bool {
        if value.is_empty() {
            return false;
        }
        self.by_kind
            .entry(kind.to_owned())
            .or_default()
            .insert(value.to_owned())
    }

    /// The values of one kind.
    pub fn values(&self, kind: &str) -> impl Iterator<Item = &str> {
        self.by_kind
            .get(kind)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// The person ids.
    pub fn persons(&self) -> impl Iterator<Item = &str> {
        self.values(PERSON)
    }

    /// Number of person ids.
    pub fn person_count(&self) -> usize {
        self.by_kind.get(PERSON).map_or(0, BTreeSet::len)
    }

    /// Every `(kind, value)` that is not a person id.
    pub fn identifiers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_kind
            .iter()
            .filter(|(k, _)| k.as_str() != PERSON)
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str())))
    }

    /// Number of identifiers that are not person ids.
    pub fn identifier_count(&self) -> usize {
        self.identifiers().count()
    }

    /// The `(kind, value)` pairs that go on the suppression list: kinds in
    /// [`suppress::KINDS`], person ids included.
    pub fn suppressible(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_kind
            .iter()
            .filter(|(k, _)| suppress::KINDS.contains(&k.as_str()))
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str())))
    }

    fn from_request(req: &EraseRequest) -> Self {
        let mut s = ErasureSet::default();
        for p in &req.persons {
            s.insert(PERSON, p);
        }
        for (k, v) in &req.identifiers {
            s.insert(k, v);
        }
        s
    }
}

/// How a table's column names the erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// `column IN (values of kind)`.
    Eq(&'static str, &'static str),
    /// `hasAny(column, [values of kind])` for an `Array(String)` column.
    Any(&'static str, &'static str),
    /// `(id_type = kind AND id_value IN (values))` for every identifier kind of the set
    /// (`identity_links`).
    Link,
}

const PERSON_ID: Term = Term::Eq("person_id", PERSON);
const CRM: Term = Term::Eq("crm_customer_id", "crm_customer_id");
const USER: Term = Term::Eq("user_id", "user_id");
const ANON: Term = Term::Eq("anonymous_id", "anonymous_id");
const PHONE: Term = Term::Eq("phone_hash", "phone_hash");
const EMAIL: Term = Term::Eq("email_hash", "email_hash");
const SIX: &[Term] = &[PERSON_ID, CRM, USER, ANON, PHONE, EMAIL];

/// The ClickHouse tables with person columns and how each names a person. Terms whose
/// column the table lacks are left out; `funnel_aggregates`, `experiment_aggregates` and
/// `ad_spend` hold no person data.
pub const TABLES: &[(&str, &[Term])] = &[
    ("events", SIX),
    ("orders", SIX),
    ("order_lines", &[PERSON_ID, CRM]),
    ("shipments", &[PERSON_ID, CRM]),
    ("tickets", &[PERSON_ID, CRM, USER]),
    (
        "customers",
        &[
            PERSON_ID,
            Term::Eq("customer_id", "crm_customer_id"),
            USER,
            ANON,
            PHONE,
            EMAIL,
        ],
    ),
    ("identity_links", &[PERSON_ID, Term::Link]),
    (
        "identity_merges",
        &[
            Term::Eq("from_person", PERSON),
            Term::Eq("into_person", PERSON),
        ],
    ),
    (
        "profiles",
        &[
            PERSON_ID,
            Term::Eq("merged_into", PERSON),
            CRM,
            Term::Any("user_ids", "user_id"),
            Term::Any("anonymous_ids", "anonymous_id"),
            PHONE,
            EMAIL,
        ],
    ),
    ("funnel_progress", &[PERSON_ID]),
    ("experiment_progress", &[PERSON_ID]),
];

/// A ClickHouse string literal: `'...'` with `\`, `'` and control characters escaped.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn quoted_list<'a>(values: impl Iterator<Item = &'a str>) -> String {
    values.map(quote).collect::<Vec<_>>().join(", ")
}

/// The `WHERE` condition selecting the erased rows of a table with these terms and
/// `columns`, or `None` when no term applies (no such column, or no value of its kind):
/// then the table has nothing to delete.
pub fn condition(terms: &[Term], columns: &BTreeSet<String>, set: &ErasureSet) -> Option<String> {
    let mut parts = Vec::new();
    for t in terms {
        match *t {
            Term::Eq(col, kind) | Term::Any(col, kind) => {
                if !columns.contains(col) || set.values(kind).next().is_none() {
                    continue;
                }
                let list = quoted_list(set.values(kind));
                parts.push(if matches!(t, Term::Eq(..)) {
                    format!("{col} IN ({list})")
                } else {
                    format!("hasAny({col}, [{list}])")
                });
            }
            Term::Link => {
                if !(columns.contains("id_type") && columns.contains("id_value")) {
                    continue;
                }
                for (kind, values) in &set.by_kind {
                    if kind == PERSON || values.is_empty() {
                        continue;
                    }
                    parts.push(format!(
                        "(id_type = {} AND id_value IN ({}))",
                        quote(kind),
                        quoted_list(values.iter().map(String::as_str))
                    ));
                }
            }
        }
    }
    (!parts.is_empty()).then(|| parts.join(" OR "))
}

/// The condition on `identity_links` matching the set's identifiers (not its persons).
fn link_condition(set: &ErasureSet) -> Option<String> {
    let cols: BTreeSet<String> = ["id_type", "id_value"].map(String::from).into();
    condition(&[Term::Link], &cols, set)
}

/// A suppression record's value.
#[derive(Debug, Serialize)]
struct SuppressionValue<'a> {
    erasure_id: &'a str,
    at_ms: i64,
}

/// The audit record (`<prefix>.erasures`, keyed by the erasure id): counts and the
/// request's digest, no identifier.
pub fn audit_json(report: &ErasureReport, request_sha256: &str, at_ms: i64) -> serde_json::Value {
    serde_json::json!({
        "erasure_id": report.erasure_id,
        "at_ms": at_ms,
        "request_sha256": request_sha256,
        "persons": report.persons,
        "identifiers": report.identifiers,
        "suppressed": report.suppressed,
        "rows_deleted": report.rows_deleted,
        "tombstones": report.tombstones,
        "skipped_tables": report.skipped_tables,
        "dry_run": report.dry_run,
    })
}

/// A new erasure id: `er-<yyyymmddThhmmssZ>-<16 random hex digits>`.
pub fn new_erasure_id(at_ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "er-{:04}{:02}{:02}T{:02}{:02}{:02}Z-{:016x}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        rand::random::<u64>()
    )
}

/// A table of [`TABLES`] the database has, with its columns.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    name: &'static str,
    terms: &'static [Term],
    columns: BTreeSet<String>,
}

/// Erases what `req` names (see the module documentation); with `dry_run`, only resolves
/// and counts. Fails before writing anything when the request is invalid, ClickHouse is
/// unreachable or a topic is missing; a failure after the suppression records were
/// written leaves them in place (the erased stay suppressed): run the same request again.
pub async fn erase(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    ch: &ClickHouseConfig,
    req: &EraseRequest,
    dry_run: bool,
) -> anyhow::Result<ErasureReport> {
    req.validate()?;
    ch.validate()?;
    let client = ch.client();
    let at_ms = now_ms();
    let erasure_id = new_erasure_id(at_ms);

    // What the database has: tables and columns.
    let targets = targets(&client, ch).await?;
    let mut report = ErasureReport {
        erasure_id: erasure_id.clone(),
        dry_run,
        skipped_tables: TABLES
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| !targets.iter().any(|x| x.name == *t))
            .map(String::from)
            .collect(),
        ..Default::default()
    };
    let has = |t: &str| targets.iter().any(|x| x.name == t);

    // 1. Resolve.
    let set = resolve(
        &client,
        &ch.database,
        req,
        has("identity_links"),
        has("identity_merges"),
    )
    .await?;
    report.persons = set.person_count();
    report.identifiers = set.identifier_count();
    let suppressions: Vec<(&str, &str)> = set.suppressible().collect();
    report.suppressed = suppressions.len();
    let mut tombstones: Vec<(String, String)> = Vec::new();
    for p in set.persons() {
        for t in [
            topics.profiles(),
            topics.profiles_state(),
            topics.funnels_state(),
        ] {
            tombstones.push((t, p.to_owned()));
        }
    }
    for (k, v) in set.identifiers() {
        tombstones.push((topics.identity_links(), format!("{k}:{v}")));
    }
    report.tombstones = tombstones.len();

    // Counts (the report of a dry run, and of the deletes).
    let mut conditions = Vec::new();
    for t in &targets {
        let n = match condition(t.terms, &t.columns, &set) {
            Some(cond) => {
                let n = count(&client, &ch.database, t.name, &cond).await?;
                conditions.push((t.name, cond));
                n
            }
            None => 0,
        };
        report.rows_deleted.insert(t.name.to_owned(), n);
    }
    tracing::info!(
        erasure_id = %erasure_id,
        dry_run,
        persons = report.persons,
        identifiers = report.identifiers,
        rows = report.rows_total(),
        "erasure resolved"
    );
    if dry_run {
        return Ok(report);
    }

    // Every topic written must exist: a record to a missing one would only time out.
    let needed = [
        topics.suppressions(),
        topics.erasures(),
        topics.profiles(),
        topics.profiles_state(),
        topics.funnels_state(),
        topics.identity_links(),
    ];
    check_topics(kafka, &needed).await?;
    let producer = zt_kafka::build_producer(kafka).context("creating the Kafka producer")?;

    // 2. Suppress.
    let value = serde_json::to_vec(&SuppressionValue {
        erasure_id: &erasure_id,
        at_ms,
    })?;
    let sup_topic = topics.suppressions();
    let records: Vec<(&str, String, Option<&[u8]>)> = suppressions
        .iter()
        .map(|(k, v)| (sup_topic.as_str(), suppress::key(k, v), Some(&value[..])))
        .collect();
    send_all(&producer, &records)
        .await
        .with_context(|| format!("writing the suppression records to {sup_topic}"))?;
    tracing::info!(erasure_id = %erasure_id, records = records.len(), "suppressions written");

    // 3. Delete, wait, count again: rows that landed after the count (in flight before
    // every component saw the suppression records) are deleted by another round.
    let mut pending: Vec<(&str, &str)> = conditions
        .iter()
        .filter(|(t, _)| report.rows_deleted.get(*t).copied().unwrap_or(0) > 0)
        .map(|(t, c)| (*t, c.as_str()))
        .collect();
    for _ in 0..DELETE_ROUNDS {
        if pending.is_empty() {
            break;
        }
        for (table, cond) in &pending {
            delete(&client, ch, table, cond).await?;
        }
        let deadline = Instant::now() + MUTATION_TIMEOUT;
        for (table, _) in &pending {
            wait_for_mutations(
                &client,
                ch,
                table,
                deadline,
                "the suppression records are written: run the same command again",
            )
            .await?;
        }
        pending.clear();
        for (table, cond) in &conditions {
            let n = count(&client, &ch.database, table, cond).await?;
            if n > 0 {
                *report.rows_deleted.entry((*table).to_owned()).or_default() += n;
                pending.push((*table, cond.as_str()));
            }
        }
    }
    if !pending.is_empty() {
        let tables: Vec<&str> = pending.iter().map(|(t, _)| *t).collect();
        bail!(
            "rows of the erased keep arriving in {} after {DELETE_ROUNDS} deletes; the \
             suppression records are written: check that the sink honours them and run the \
             same command again",
            tables.join(", ")
        );
    }
    tracing::info!(erasure_id = %erasure_id, rows = report.rows_total(), "rows deleted");

    // 4. Tombstones.
    let records: Vec<(&str, String, Option<&[u8]>)> = tombstones
        .iter()
        .map(|(t, k)| (t.as_str(), k.clone(), None))
        .collect();
    send_all(&producer, &records)
        .await
        .context("writing the tombstones")?;

    // 5. Audit.
    let audit = serde_json::to_vec(&audit_json(&report, &request_sha256(req), at_ms))?;
    let erasures = topics.erasures();
    send_all(
        &producer,
        &[(erasures.as_str(), erasure_id.clone(), Some(&audit[..]))],
    )
    .await
    .with_context(|| format!("writing the audit record to {erasures}"))?;
    tracing::info!(
        erasure_id = %erasure_id,
        tombstones = report.tombstones,
        "erasure done"
    );
    Ok(report)
}

/// The tables of [`TABLES`] the database has, with their columns.
async fn targets(
    client: &clickhouse::Client,
    ch: &ClickHouseConfig,
) -> anyhow::Result<Vec<Target>> {
    let names = quoted_list(TABLES.iter().map(|(t, _)| *t));
    let sql = format!(
        "SELECT table, name FROM system.columns WHERE database = {} AND table IN ({names})",
        quote(&ch.database)
    );
    let rows: Vec<(String, String)> = client
        .query_raw(&sql)
        .fetch_all()
        .await
        .with_context(|| format!("reading the tables of database {}", ch.database))?;
    let mut out = Vec::new();
    for (name, terms) in TABLES {
        let columns: BTreeSet<String> = rows
            .iter()
            .filter(|(t, _)| t == name)
            .map(|(_, c)| c.clone())
            .collect();
        if columns.is_empty() {
            tracing::warn!(table = name, database = %ch.database, "table missing; skipped");
            continue;
        }
        out.push(Target {
            name,
            terms,
            columns,
        });
    }
    if !ch.cluster.is_empty() {
        let locals: Vec<String> = out.iter().map(|t| format!("{}_local", t.name)).collect();
        let locals = quoted_list(locals.iter().map(String::as_str));
        let sql = format!(
            "SELECT name FROM system.tables WHERE database = {} AND name IN ({locals})",
            quote(&ch.database)
        );
        let present: Vec<String> = client
            .query_raw(&sql)
            .fetch_all()
            .await
            .context("reading the local tables")?;
        if let Some(t) = out
            .iter()
            .find(|t| !present.contains(&format!("{}_local", t.name)))
        {
            bail!(
                "clickhouse.cluster is set but {}.{}_local does not exist on this server (zt migrate --cluster)",
                ch.database,
                t.name
            );
        }
    }
    Ok(out)
}

/// Step 1: persons and identifiers.
async fn resolve(
    client: &clickhouse::Client,
    db: &str,
    req: &EraseRequest,
    links: bool,
    merges: bool,
) -> anyhow::Result<ErasureSet> {
    let mut set = ErasureSet::from_request(req);
    if links && let Some(cond) = link_condition(&set) {
        let sql = format!(
            "SELECT DISTINCT person_id FROM {db}.identity_links FINAL WHERE deleted = 0 AND ({cond})"
        );
        let persons: Vec<String> = query(client, &sql)
            .fetch_all()
            .await
            .context("resolving the identifiers (identity_links)")?;
        for p in &persons {
            set.insert(PERSON, p);
        }
    }
    if merges {
        for round in 0.. {
            if set.person_count() == 0 {
                break;
            }
            if round == MERGE_ROUNDS {
                bail!("following identity_merges did not end after {MERGE_ROUNDS} rounds");
            }
            let list = quoted_list(set.persons());
            let sql = format!(
                "SELECT from_person, into_person FROM {db}.identity_merges FINAL \
                 WHERE from_person IN ({list}) OR into_person IN ({list})"
            );
            let pairs: Vec<(String, String)> = query(client, &sql)
                .fetch_all()
                .await
                .context("following merges (identity_merges)")?;
            let mut new = false;
            for (from, into) in &pairs {
                new |= set.insert(PERSON, from);
                new |= set.insert(PERSON, into);
            }
            if !new {
                break;
            }
        }
    }
    if links && set.person_count() > 0 {
        let sql = format!(
            "SELECT id_type, id_value FROM {db}.identity_links FINAL WHERE person_id IN ({})",
            quoted_list(set.persons())
        );
        let ids: Vec<(String, String)> = query(client, &sql)
            .fetch_all()
            .await
            .context("reading the persons' identifiers (identity_links)")?;
        for (k, v) in &ids {
            if k != PERSON {
                set.insert(k, v);
            }
        }
    }
    Ok(set)
}

/// A raw query (values are quoted by [`quote`]; `?` is not a placeholder), allowed to be
/// as long as it is.
fn query(client: &clickhouse::Client, sql: &str) -> clickhouse::query::Query {
    let q = client.query_raw(sql);
    if sql.len() > 200_000 {
        q.with_setting("max_query_size", (sql.len() * 2).to_string())
    } else {
        q
    }
}

pub(crate) async fn count(
    client: &clickhouse::Client,
    db: &str,
    table: &str,
    cond: &str,
) -> anyhow::Result<u64> {
    query(
        client,
        &format!("SELECT count() FROM {db}.{table} WHERE {cond}"),
    )
    .fetch_one()
    .await
    .with_context(|| format!("counting the rows to delete in {db}.{table}"))
}

/// The table a mutation runs on and its `ON CLUSTER` clause.
fn mutated(ch: &ClickHouseConfig, table: &str) -> (String, String) {
    if ch.cluster.is_empty() {
        (table.to_owned(), String::new())
    } else {
        (
            format!("{table}_local"),
            format!(" ON CLUSTER {}", quote(&ch.cluster)),
        )
    }
}

/// The `ALTER TABLE ... DELETE` of one table.
fn delete_statement(ch: &ClickHouseConfig, table: &str, cond: &str) -> String {
    let (t, on) = mutated(ch, table);
    format!("ALTER TABLE {}.{t}{on} DELETE WHERE {cond}", ch.database)
}

pub(crate) async fn delete(
    client: &clickhouse::Client,
    ch: &ClickHouseConfig,
    table: &str,
    cond: &str,
) -> anyhow::Result<()> {
    query(client, &delete_statement(ch, table, cond))
        .execute()
        .await
        .with_context(|| format!("deleting from {}.{table}", ch.database))
}

/// Waits until no mutation of `table` is pending; after `deadline` fails with `retry`
/// (what to do then) in the message.
pub(crate) async fn wait_for_mutations(
    client: &clickhouse::Client,
    ch: &ClickHouseConfig,
    table: &str,
    deadline: Instant,
    retry: &str,
) -> anyhow::Result<()> {
    let (t, _) = mutated(ch, table);
    let sql = format!(
        "SELECT count() FROM system.mutations WHERE database = {} AND table = {} AND is_done = 0",
        quote(&ch.database),
        quote(&t)
    );
    loop {
        let pending: u64 = client
            .query_raw(&sql)
            .fetch_one()
            .await
            .with_context(|| format!("waiting for the delete of {}.{table}", ch.database))?;
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the delete of {}.{table} has not finished after {} s ({pending} mutations pending, \
                 see system.mutations); {retry}",
                ch.database,
                MUTATION_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn check_topics(kafka: &KafkaConfig, needed: &[String]) -> anyhow::Result<()> {
    let kafka = kafka.clone();
    let present = tokio::task::spawn_blocking(move || {
        zt_kafka::topics::list_topics(&kafka, Duration::from_secs(10))
    })
    .await
    .context("listing topics")?
    .context("listing the broker's topics")?;
    let missing: Vec<&str> = needed
        .iter()
        .filter(|t| !present.iter().any(|(p, _)| p == *t))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        bail!(
            "topic(s) {} do not exist (zt topics create); nothing was erased",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Sends every record and waits for each acknowledgement; `None` payload = tombstone.
async fn send_all(
    producer: &FutureProducer,
    records: &[(&str, String, Option<&[u8]>)],
) -> anyhow::Result<()> {
    for chunk in records.chunks(10_000) {
        let sends = chunk.iter().map(|(topic, key, payload)| {
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).key(key.as_bytes());
            if let Some(p) = payload {
                rec = rec.payload(p);
            }
            producer.send(rec, Timeout::Never)
        });
        let mut failed = 0usize;
        let mut first = None;
        for r in futures::future::join_all(sends).await {
            if let Err((e, _)) = r {
                failed += 1;
                first.get_or_insert(e);
            }
        }
        if let Some(e) = first {
            return Err(anyhow::Error::new(e).context(format!(
                "{failed} of {} records were not acknowledged",
                chunk.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn terms(table: &str) -> &'static [Term] {
        TABLES.iter().find(|(t, _)| *t == table).unwrap().1
    }

    fn set(pairs: &[(&str, &str)]) -> ErasureSet {
        let mut s = ErasureSet::default();
        for (k, v) in pairs {
            s.insert(k, v);
        }
        s
    }

    #[test]
    fn quoting_escapes_quotes_backslashes_and_controls() {
        assert_eq!(quote("abc"), "'abc'");
        assert_eq!(quote(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(quote("x\n\t\0"), r"'x\n\t\0'");
        assert_eq!(quote(r"\'"), r"'\\\''");
        // A value cannot end the literal early: every ' inside is preceded by an odd
        // number of backslashes.
        let q = quote(r"'); DROP TABLE x; --\");
        let inner = &q[1..q.len() - 1];
        for (i, c) in inner.char_indices() {
            if c == '\'' {
                let bs = inner[..i].chars().rev().take_while(|c| *c == '\\').count();
                assert_eq!(bs % 2, 1, "{q}");
            }
        }
    }

    #[test]
    fn conditions_use_the_columns_the_table_has() {
        let s = set(&[
            (PERSON, "p1"),
            ("crm_customer_id", "c'1"),
            ("user_id", "u\\1"),
            ("phone_hash", "ph"),
        ]);
        let events = cols(&[
            "event_id",
            "crm_customer_id",
            "user_id",
            "anonymous_id",
            "phone_hash",
            "email_hash",
            "person_id",
        ]);
        assert_eq!(
            condition(terms("events"), &events, &s).unwrap(),
            r"person_id IN ('p1') OR crm_customer_id IN ('c\'1') OR user_id IN ('u\\1') OR phone_hash IN ('ph')"
        );
        let lines = cols(&["crm_customer_id", "person_id", "sku"]);
        assert_eq!(
            condition(terms("order_lines"), &lines, &s).unwrap(),
            r"person_id IN ('p1') OR crm_customer_id IN ('c\'1')"
        );
        // customers: the CRM id is customer_id.
        let customers = cols(&["customer_id", "user_id", "person_id"]);
        assert_eq!(
            condition(terms("customers"), &customers, &s).unwrap(),
            r"person_id IN ('p1') OR customer_id IN ('c\'1') OR user_id IN ('u\\1')"
        );
        // An older table without person_id: only the identifier columns.
        let old = cols(&["crm_customer_id"]);
        assert_eq!(
            condition(terms("shipments"), &old, &s).unwrap(),
            r"crm_customer_id IN ('c\'1')"
        );
        // Nothing applies: no condition at all (never an empty DELETE WHERE).
        assert_eq!(
            condition(terms("funnel_progress"), &cols(&["funnel_id"]), &s),
            None
        );
        assert_eq!(
            condition(
                terms("funnel_progress"),
                &cols(&["person_id"]),
                &set(&[("user_id", "u")])
            ),
            None
        );
    }

    #[test]
    fn profiles_use_has_any_for_arrays_and_links_match_pairs() {
        let s = set(&[
            (PERSON, "p1"),
            (PERSON, "p2"),
            ("user_id", "u1"),
            ("anonymous_id", "a1"),
            ("order_id", "o1"),
        ]);
        let profiles = cols(&[
            "person_id",
            "merged_into",
            "crm_customer_id",
            "user_ids",
            "anonymous_ids",
            "phone_hash",
            "email_hash",
        ]);
        assert_eq!(
            condition(terms("profiles"), &profiles, &s).unwrap(),
            "person_id IN ('p1', 'p2') OR merged_into IN ('p1', 'p2') OR hasAny(user_ids, ['u1']) \
             OR hasAny(anonymous_ids, ['a1'])"
        );
        let links = cols(&["id_type", "id_value", "person_id", "version", "deleted"]);
        assert_eq!(
            condition(terms("identity_links"), &links, &s).unwrap(),
            "person_id IN ('p1', 'p2') OR (id_type = 'anonymous_id' AND id_value IN ('a1')) \
             OR (id_type = 'order_id' AND id_value IN ('o1')) \
             OR (id_type = 'user_id' AND id_value IN ('u1'))"
        );
        let merges = cols(&["from_person", "into_person", "version"]);
        assert_eq!(
            condition(terms("identity_merges"), &merges, &s).unwrap(),
            "from_person IN ('p1', 'p2') OR into_person IN ('p1', 'p2')"
        );
    }

    #[test]
    fn empty_values_are_never_part_of_the_set() {
        let mut s = ErasureSet::default();
        assert!(!s.insert("user_id", ""));
        assert_eq!(s.identifier_count(), 0);
        assert_eq!(condition(SIX, &cols(&["user_id"]), &s), None);
        let bad = EraseRequest {
            persons: vec![],
            identifiers: vec![("user_id".into(), " ".into())],
        };
        assert!(bad.validate().unwrap_err().to_string().contains("user_id"));
        assert!(EraseRequest::default().validate().is_err());
        let unknown = EraseRequest {
            persons: vec![],
            identifiers: vec![("phone".into(), "138".into())],
        };
        assert!(unknown.validate().is_err());
    }

    #[test]
    fn suppressible_kinds_include_persons_and_exclude_order_ids() {
        let s = set(&[(PERSON, "p1"), ("phone_hash", "h"), ("order_id", "o1")]);
        let sup: Vec<_> = s.suppressible().collect();
        assert_eq!(sup, vec![("person_id", "p1"), ("phone_hash", "h")]);
        assert_eq!(s.identifier_count(), 2);
        assert_eq!(s.person_count(), 1);
    }

    #[test]
    fn cluster_deletes_go_to_the_local_tables() {
        let mut ch = ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "zt".into(),
            user: "default".into(),
            password: Default::default(),
            cluster: String::new(),
        };
        assert_eq!(
            delete_statement(&ch, "events", "person_id IN ('p')"),
            "ALTER TABLE zt.events DELETE WHERE person_id IN ('p')"
        );
        ch.cluster = "prod".into();
        assert_eq!(
            delete_statement(&ch, "events", "person_id IN ('p')"),
            "ALTER TABLE zt.events_local ON CLUSTER 'prod' DELETE WHERE person_id IN ('p')"
        );
    }

    #[test]
    fn request_digest_is_order_independent_and_hides_values() {
        let a = EraseRequest {
            persons: vec!["p-9".into()],
            identifiers: vec![
                ("phone_hash".into(), "aa11".into()),
                ("user_id".into(), "u-1".into()),
            ],
        };
        let b = EraseRequest {
            persons: vec!["p-9".into(), "p-9".into()],
            identifiers: vec![
                ("user_id".into(), "u-1".into()),
                ("phone_hash".into(), "aa11".into()),
            ],
        };
        let d = request_sha256(&a);
        assert_eq!(d, request_sha256(&b));
        assert_eq!(d.len(), 64);
        assert!(d.bytes().all(|c| c.is_ascii_hexdigit()));
        for raw in ["p-9", "aa11", "u-1", "13812345678"] {
            assert!(!d.contains(raw));
        }
        let c = EraseRequest {
            persons: vec!["p-9".into()],
            identifiers: vec![("user_id".into(), "u-1".into())],
        };
        assert_ne!(d, request_sha256(&c));
        // The kind is part of the digest.
        let e = EraseRequest {
            persons: vec![],
            identifiers: vec![("user_id".into(), "x".into())],
        };
        let f = EraseRequest {
            persons: vec![],
            identifiers: vec![("anonymous_id".into(), "x".into())],
        };
        assert_ne!(request_sha256(&e), request_sha256(&f));
    }

    #[test]
    fn the_audit_record_and_the_report_carry_no_identifier() {
        let req = EraseRequest {
            persons: vec!["person-secret-1".into()],
            identifiers: vec![
                ("user_id".into(), "user-secret-2".into()),
                ("phone_hash".into(), "feedc0de".into()),
            ],
        };
        let report = ErasureReport {
            erasure_id: new_erasure_id(1_750_000_000_000),
            dry_run: false,
            persons: 2,
            identifiers: 5,
            suppressed: 6,
            rows_deleted: [("events".to_string(), 12u64), ("profiles".into(), 3)].into(),
            tombstones: 11,
            skipped_tables: vec!["experiment_progress".into()],
        };
        let audit = audit_json(&report, &request_sha256(&req), 1_750_000_000_000);
        let text = audit.to_string();
        for secret in ["person-secret-1", "user-secret-2", "feedc0de"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(audit["erasure_id"], report.erasure_id.as_str());
        assert_eq!(audit["persons"], 2);
        assert_eq!(audit["identifiers"], 5);
        assert_eq!(audit["rows_deleted"]["events"], 12);
        assert_eq!(audit["tombstones"], 11);
        assert_eq!(audit["dry_run"], false);
        assert_eq!(audit["request_sha256"], request_sha256(&req).as_str());
    }

    #[test]
    fn erasure_ids_carry_the_time_and_differ() {
        let a = new_erasure_id(1_750_000_000_000);
        let b = new_erasure_id(1_750_000_000_000);
        assert!(a.starts_with("er-20250615T150640Z-"), "{a}");
        assert_eq!(a.len(), "er-20250615T150640Z-".len() + 16);
        assert_ne!(a, b);
    }
}
