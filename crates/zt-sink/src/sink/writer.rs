//! ClickHouse side of the sink: one INSERT per table per flush (RowBinary, every partition's pending records), and
//! the resume query that reads which records of a partition a table already holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clickhouse::Client;
use serde::Deserialize;

use crate::config::ClickHouseConfig;
use crate::error::{Error, Result};
use crate::failpoint::{self, Point};
use crate::metrics::SinkMetrics;
use crate::rows::TABLE_COLUMNS;
use crate::sink::TABLES;

/// Bytes handed to the HTTP body per chunk (the `clickhouse` crate's own `Insert` uses
/// 256 KiB).
const CHUNK: usize = 256 * 1024;

/// One table's share of a partition batch: its rows, RowBinary-encoded, per record.
#[derive(Debug, Default)]
pub(crate) struct TableBuf {
    data: Vec<u8>,
    recs: Vec<RecSpan>,
}

/// The rows one record has in a table: its offset, where its bytes end in
/// [`TableBuf::data`], and how many rows they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecSpan {
    offset: i64,
    end: usize,
    rows: u32,
}

impl TableBuf {
    /// Appends the `rows` rows (RowBinary `bytes`) of the record at `offset`.
    pub(crate) fn push(&mut self, offset: i64, bytes: &[u8], rows: u32) {
        self.data.extend_from_slice(bytes);
        self.recs.push(RecSpan {
            offset,
            end: self.data.len(),
            rows,
        });
    }

    /// Records (with rows in this table).
    pub(crate) fn records(&self) -> usize {
        self.recs.len()
    }

    /// Offset of record `i`.
    pub(crate) fn offset(&self, i: usize) -> i64 {
        self.recs[i].offset
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.recs[i - 1].end }
    }

    /// The bytes of records `a..b`.
    fn bytes(&self, a: usize, b: usize) -> &[u8] {
        &self.data[self.start(a)..self.start(b)]
    }

    /// The rows of records `a..b`.
    pub(crate) fn rows(&self, a: usize, b: usize) -> usize {
        self.recs[a..b].iter().map(|r| r.rows as usize).sum()
    }

    /// Runs of consecutive records in `a..b` for which `skip` is false, and the number of
    /// rows skipped.
    pub(crate) fn pending_runs(
        &self,
        a: usize,
        b: usize,
        skip: impl Fn(i64) -> bool,
    ) -> (Vec<(usize, usize)>, usize) {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut skipped = 0;
        for i in a..b {
            if skip(self.recs[i].offset) {
                skipped += self.recs[i].rows as usize;
            } else if let Some(last) = runs.last_mut()
                && last.1 == i
            {
                last.1 = i + 1;
            } else {
                runs.push((i, i + 1));
            }
        }
        (runs, skipped)
    }

    /// Removes everything, keeping the allocations.
    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.recs.clear();
    }
}

/// Inserts rows and reads resume state.
#[derive(Clone)]
pub(crate) struct Writer {
    client: Client,
    timeout: Duration,
    metrics: SinkMetrics,
    /// `INSERT INTO <table>(<columns>) FORMAT RowBinary`, per table.
    sql: Vec<String>,
    /// The `query_id`s of INSERTs that failed without a rejection (a timeout, a lost
    /// connection): the server may still be running them, or about to.
    failed: Arc<Mutex<Vec<String>>>,
    /// Prefix of this process's `query_id`s, and the sequence after it.
    id_prefix: String,
    seq: Arc<AtomicU64>,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Present {
    t: u8,
    o: i64,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct StoredId {
    event_id: String,
}

impl Writer {
    pub(crate) fn new(cfg: &ClickHouseConfig, timeout: Duration, metrics: SinkMetrics) -> Self {
        let mut client = cfg.client();
        if !cfg.cluster.is_empty() {
            // An INSERT into a Distributed table must only return once the shards have
            // the rows, or "insert ended" would not mean "stored".
            client = client.with_setting("insert_distributed_sync", "1");
        }
        let sql = TABLES
            .iter()
            .zip(TABLE_COLUMNS)
            .map(|(t, cols)| {
                let cols: Vec<String> = cols.iter().map(|c| format!("`{c}`")).collect();
                format!("INSERT INTO {t}({}) FORMAT RowBinary", cols.join(","))
            })
            .collect();
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Writer {
            failed: Arc::default(),
            id_prefix: format!("zt-sink-{}-{started}", std::process::id()),
            seq: Arc::default(),
            client,
            timeout,
            metrics,
            sql,
        }
    }

    /// `SELECT 1`: is the server there.
    pub(crate) async fn ping(&self) -> Result<()> {
        self.client
            .query("SELECT 1")
            .fetch_one::<u8>()
            .await
            .map(|_| ())
            .map_err(|e| Error::ch("ping", e))
    }

    /// One INSERT into table `t` of the records `runs` (ranges of record indexes) of
    /// `buf`; returns when the server has stored them.
    pub(crate) async fn insert(
        &self,
        t: usize,
        buf: &TableBuf,
        runs: &[(usize, usize)],
    ) -> Result<()> {
        self.insert_many(t, &[(buf, runs)]).await
    }

    /// One INSERT into table `t` of the records `runs` of each buffer (the batches of
    /// several partitions); returns when the server has stored them. Every row carries its
    /// `_topic`, `_partition` and `_offset`, so what an INSERT that failed half-way stored
    /// is found by the resume read like any other.
    pub(crate) async fn insert_many(
        &self,
        t: usize,
        parts: &[(&TableBuf, &[(usize, usize)])],
    ) -> Result<()> {
        let id = format!(
            "{}-{}",
            self.id_prefix,
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let r = self.send_insert(t, parts, &id).await;
        if let Err(e) = &r
            && !e.is_rejection()
        {
            self.failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(id);
        }
        r
    }

    /// Waits until no INSERT of this process that failed without a rejection is running
    /// on the server: a timed-out INSERT may still be running there (it was sent whole,
    /// and the server was stopped or slow), or start just after the server comes back,
    /// and what it stores must be seen by the re-read that follows, or the retry would
    /// store it twice. Its `query_id` must be absent from `system.processes` in two
    /// checks 0.5 s apart. An error (the server still away) is the caller's to retry.
    pub(crate) async fn settle_failed_inserts(&self) -> Result<()> {
        let ids: Vec<String> = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if ids.is_empty() {
            return Ok(());
        }
        // Our own ids (letters, digits and dashes), quoted.
        let list: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
        let sql = format!(
            "SELECT count() FROM system.processes WHERE query_id IN ({})",
            list.join(",")
        );
        let mut clear = 0;
        let since = Instant::now();
        while clear < 2 {
            let running: u64 = self
                .client
                .query(&sql)
                .fetch_one()
                .await
                .map_err(|e| Error::ch("read running inserts", e))?;
            if running == 0 {
                clear += 1;
            } else {
                clear = 0;
                tracing::info!(
                    running,
                    waited_s = since.elapsed().as_secs(),
                    "an INSERT that failed here is still running on the server; waiting for it before re-reading"
                );
            }
            if clear < 2 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|i| !ids.contains(i));
        Ok(())
    }

    async fn send_insert(
        &self,
        t: usize,
        parts: &[(&TableBuf, &[(usize, usize)])],
        query_id: &str,
    ) -> Result<()> {
        failpoint::hit(Point::BeforeInsert);
        let table = TABLES[t];
        let op = || format!("insert into {table}");
        let started = Instant::now();
        let mut ins = self
            .client
            .insert_formatted_with(self.sql[t].clone())
            .with_setting("query_id", query_id)
            .with_timeouts(Some(self.timeout), Some(self.timeout))
            .buffered_with_capacity(CHUNK);
        let total: usize = parts
            .iter()
            .flat_map(|(buf, runs)| runs.iter().map(|&(a, b)| buf.rows(a, b)))
            .sum();
        let half = total / 2;
        let (mut rows, mut bytes) = (0usize, 0usize);
        // Plain loops: an iterator adapter with closures held across the awaits below
        // defeats rustc's `Send` inference for the sink task (rust-lang/rust#110338).
        for &(buf, runs) in parts {
            for &(a, b) in runs {
                // Whole runs at once, except that a run crossing half the rows is cut after
                // the record that reaches it: the `mid_insert` failpoint is hit there, with the
                // first half sent.
                let mut cut = b;
                if rows < half && half > 0 {
                    let mut acc = rows;
                    for k in a..b {
                        acc += buf.rows(k, k + 1);
                        if acc >= half {
                            cut = k + 1;
                            break;
                        }
                    }
                }
                for (i, j) in [(a, cut), (cut, b)] {
                    if i >= j {
                        continue;
                    }
                    let mut data = buf.bytes(i, j);
                    bytes += data.len();
                    while !data.is_empty() {
                        let n = ins.write(data).await.map_err(|e| Error::ch(op(), e))?;
                        data = &data[n..];
                    }
                    let before = rows;
                    rows += buf.rows(i, j);
                    if before < half && rows >= half {
                        ins.flush().await.map_err(|e| Error::ch(op(), e))?;
                        failpoint::hit(Point::MidInsert);
                    }
                }
            }
        }
        ins.end().await.map_err(|e| Error::ch(op(), e))?;
        failpoint::hit(Point::AfterInsert);
        let m = &self.metrics;
        m.insert_duration
            .with_label_values(&[table])
            .observe(started.elapsed().as_secs_f64());
        m.rows_inserted
            .with_label_values(&[table])
            .inc_by(rows as u64);
        m.bytes_inserted
            .with_label_values(&[table])
            .inc_by(bytes as u64);
        Ok(())
    }

    /// The event ids stored in `events` from `topic`/`partition` at offsets in
    /// `[from, to)`, in offset order (the seed of the sink's `dedup_window_records`).
    pub(crate) async fn stored_event_ids(
        &self,
        topic: &str,
        partition: i32,
        (from, to): (i64, i64),
    ) -> Result<Vec<String>> {
        let sql = "SELECT event_id FROM events \
                   WHERE _topic = ? AND _partition = ? AND _offset >= ? AND _offset < ? \
                   ORDER BY _offset";
        let mut cursor = self
            .client
            .query(sql)
            .bind(topic)
            .bind(partition)
            .bind(from)
            .bind(to)
            .fetch::<StoredId>()
            .map_err(|e| Error::ch("read recent event ids", e))?;
        let mut out = Vec::new();
        while let Some(r) = cursor
            .next()
            .await
            .map_err(|e| Error::ch("read recent event ids", e))?
        {
            out.push(r.event_id);
        }
        Ok(out)
    }

    /// The offsets of `topic`/`partition` in `[from, to]` that each of `tables` (indexes
    /// into [`TABLES`]) holds, passed to `add(table_index, offset)` in increasing order per
    /// table. One query over all the tables.
    pub(crate) async fn present(
        &self,
        topic: &str,
        partition: i32,
        (from, to): (i64, i64),
        tables: &[usize],
        mut add: impl FnMut(usize, i64),
    ) -> Result<()> {
        let parts: Vec<String> = tables
            .iter()
            .filter_map(|&i| TABLES.get(i).map(|t| (i, t)))
            .map(|(i, t)| {
                format!(
                    "SELECT toUInt8({i}) AS t, _offset AS o FROM {t} \
                     WHERE _topic = ? AND _partition = ? AND _offset >= ? AND _offset <= ? \
                     GROUP BY _offset"
                )
            })
            .collect();
        if parts.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT t, o FROM ({}) ORDER BY t, o",
            parts.join(" UNION ALL ")
        );
        let mut q = self.client.query(&sql);
        for _ in 0..parts.len() {
            q = q.bind(topic).bind(partition).bind(from).bind(to);
        }
        let mut cursor = q
            .fetch::<Present>()
            .map_err(|e| Error::ch("read resume offsets", e))?;
        while let Some(p) = cursor
            .next()
            .await
            .map_err(|e| Error::ch("read resume offsets", e))?
        {
            add(usize::from(p.t), p.o);
        }
        Ok(())
    }
}
