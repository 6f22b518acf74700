//! ClickHouse side of the sink: one INSERT per table per flush (RowBinary, every partition's pending records), and
//! the resume query that reads which records of a partition a table already holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clickhouse::Client;
use serde::Deserialize;

use crate::config::ClickHouseConfig;
use crate::error::{Error, Result};
use crate::failpoint::{self, Point};
use crate::metrics::SinkMetrics;
use crate::rows::TABLE_COLUMNS;
use crate::sink::TABLES;

/// Bytes of the body compressed and sent per chunk (the `clickhouse` crate's own `Insert`
/// uses 256 KiB).
const CHUNK: usize = 256 * 1024;

/// One table's share of a partition batch: its rows, RowBinary-encoded, per record.
#[derive(Debug, Default)]
pub(crate) struct TableBuf {
    data: Vec<u8>,
    /// The rows once the batch is flushed ([`TableBuf::freeze`]): shared with the INSERT
    /// requests without a copy.
    frozen: Bytes,
    recs: Vec<RecSpan>,
    /// Rows of all its records.
    row_total: usize,
    /// When its oldest record was taken.
    first_at: Option<Instant>,
}

/// Pieces of a body shorter than this are copied together before being sent; longer ones
/// are sent as slices of their batch.
const COALESCE: usize = 64 * 1024;

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
        debug_assert!(self.frozen.is_empty(), "a frozen buffer takes no rows");
        self.first_at.get_or_insert_with(Instant::now);
        self.row_total += rows as usize;
        self.data.extend_from_slice(bytes);
        self.recs.push(RecSpan {
            offset,
            end: self.data.len(),
            rows,
        });
    }

    /// Makes the rows shareable with INSERT requests (no copy); no row is added after.
    pub(crate) fn freeze(&mut self) {
        if self.frozen.is_empty() {
            self.frozen = Bytes::from(std::mem::take(&mut self.data));
        }
    }

    /// The bytes of records `a..b`, shared when frozen (else copied).
    fn slice(&self, a: usize, b: usize) -> Bytes {
        let range = self.start(a)..self.start(b);
        if self.frozen.is_empty() {
            Bytes::copy_from_slice(&self.data[range])
        } else {
            self.frozen.slice(range)
        }
    }

    /// Bytes it can hold without growing (after [`TableBuf::clear`]).
    pub(crate) fn capacity(&self) -> usize {
        self.data.capacity()
    }

    /// Nothing allocated: a fresh buffer, or one a flush took.
    pub(crate) fn is_unallocated(&self) -> bool {
        self.data.capacity() == 0 && self.frozen.is_empty()
    }

    /// Records (with rows in this table).
    pub(crate) fn records(&self) -> usize {
        self.recs.len()
    }

    /// Rows of all its records.
    pub(crate) fn row_total(&self) -> usize {
        self.row_total
    }

    /// RowBinary bytes of all its records.
    pub(crate) fn byte_total(&self) -> usize {
        self.data.len().max(self.frozen.len())
    }

    /// When its oldest record was taken (none when empty).
    pub(crate) fn first_at(&self) -> Option<Instant> {
        self.first_at
    }

    /// Offset of its first record (none when empty).
    pub(crate) fn first_offset(&self) -> Option<i64> {
        self.recs.first().map(|r| r.offset)
    }

    /// Offset of record `i`.
    pub(crate) fn offset(&self, i: usize) -> i64 {
        self.recs[i].offset
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.recs[i - 1].end }
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

    /// Removes everything, keeping the allocations (a frozen buffer's too, unless a
    /// request that outlived its timeout still holds it).
    pub(crate) fn clear(&mut self) {
        if let Ok(m) = std::mem::take(&mut self.frozen).try_into_mut() {
            self.data = Vec::from(m);
        }
        self.data.clear();
        self.recs.clear();
        self.row_total = 0;
        self.first_at = None;
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
    /// INSERTs that outlived `insert_timeout_ms`, still running, by `query_id`.
    stragglers: Arc<Mutex<Vec<Straggler>>>,
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

/// An INSERT that outlived `insert_timeout_ms`: its `query_id` and its task.
type Straggler = (String, tokio::task::JoinHandle<Result<()>>);

/// One INSERT request, owned by its task.
struct Request {
    client: Client,
    sql: String,
    query_id: String,
    /// The body: slices of the batches' buffers.
    body: Vec<Bytes>,
    /// Index of the piece of `body` before which the `mid_insert` failpoint is hit.
    cut: Option<usize>,
    rows: usize,
    table: &'static str,
    metrics: SinkMetrics,
}

impl Request {
    async fn send(self) -> Result<()> {
        let op = || format!("insert into {}", self.table);
        let started = Instant::now();
        let mut ins = self
            .client
            .insert_formatted_with(self.sql.clone())
            .with_setting("query_id", self.query_id.clone());
        let n = self.body.len();
        let cut = self.cut.unwrap_or(n);
        for (i, j) in [(0, cut), (cut, n)] {
            for block in blocks(&self.body[i..j]) {
                ins.send(block).await.map_err(|e| Error::ch(op(), e))?;
            }
            if self.cut.is_some() && i == 0 && failpoint::is_armed(Point::MidInsert) {
                // `send` only queues the chunks for the connection: give them time to
                // reach the server before the crash.
                tokio::time::sleep(Duration::from_millis(200)).await;
                failpoint::hit(Point::MidInsert);
            }
        }
        ins.end().await.map_err(|e| Error::ch(op(), e))?;
        failpoint::hit(Point::AfterInsert);
        let m = &self.metrics;
        m.insert_duration
            .with_label_values(&[self.table])
            .observe(started.elapsed().as_secs_f64());
        m.rows_inserted
            .with_label_values(&[self.table])
            .inc_by(self.rows as u64);
        m.bytes_inserted
            .with_label_values(&[self.table])
            .inc_by(self.body.iter().map(Bytes::len).sum::<usize>() as u64);
        Ok(())
    }
}

/// The outcome of an INSERT's task.
fn joined(done: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    done.unwrap_or_else(|e| {
        Err(Error::Io {
            path: "sink insert task".into(),
            source: std::io::Error::other(e.to_string()),
        })
    })
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
            stragglers: Arc::default(),
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
    ///
    /// The request runs in a task of its own, on the rows shared with it (slices of frozen
    /// buffers, [`TableBuf::freeze`]; others are copied), with the `query_id`
    /// `zt-sink-<pid>-<start>-<n>`. When it outlives `insert_timeout_ms` the caller gets
    /// a timeout and goes the careful way (re-read, then insert what is missing), but the
    /// request is **not** dropped: a server that was stopped or slow may still store it,
    /// and the re-read must see what it stored. [`Writer::settle_failed_inserts`] waits for
    /// every such request to end before the re-read.
    pub(crate) async fn insert_many(
        &self,
        t: usize,
        parts: &[(&TableBuf, &[(usize, usize)])],
    ) -> Result<()> {
        failpoint::hit(Point::BeforeInsert);
        let id = format!(
            "{}-{}",
            self.id_prefix,
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let (body, cut, rows) = body_of(parts);
        let request = Request {
            client: self.client.clone(),
            sql: self.sql[t].clone(),
            query_id: id.clone(),
            body,
            cut,
            rows,
            table: TABLES[t],
            metrics: self.metrics.clone(),
        };
        let mut task = tokio::spawn(request.send());
        match tokio::time::timeout(self.timeout, &mut task).await {
            Ok(done) => joined(done),
            Err(_) => {
                tracing::warn!(table = TABLES[t], query_id = %id,
                    "insert did not end within insert_timeout_ms; it is kept running and waited for before the retry");
                self.stragglers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((id, task));
                Err(Error::ch(
                    format!("insert into {}", TABLES[t]),
                    clickhouse::error::Error::TimedOut,
                ))
            }
        }
    }

    /// Waits until every INSERT that outlived `insert_timeout_ms` has ended (stored or
    /// failed), so that a re-read sees what it stored and the retry does not store it
    /// twice. Each is waited for up to `insert_timeout_ms` per call; one still running
    /// then makes this a retryable error (the caller backs off and calls again).
    pub(crate) async fn settle_failed_inserts(&self) -> Result<()> {
        loop {
            let next = self
                .stragglers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let Some((id, mut task)) = next else {
                return Ok(());
            };
            match tokio::time::timeout(self.timeout, &mut task).await {
                Ok(done) => {
                    let r = joined(done);
                    tracing::info!(query_id = %id, stored = r.is_ok(),
                        "an insert that outlived insert_timeout_ms has ended");
                }
                Err(_) => {
                    tracing::info!(query_id = %id,
                        "an insert that outlived insert_timeout_ms is still running; waiting for it before re-reading");
                    self.stragglers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((id, task));
                    return Err(Error::ch(
                        "wait for an earlier insert",
                        clickhouse::error::Error::TimedOut,
                    ));
                }
            }
        }
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

/// The blocks `pieces` are sent in, each compressed on its own: long pieces as slices of
/// their batch (no copy) of at most [`CHUNK`] bytes, short ones (under [`COALESCE`]) copied
/// together up to [`CHUNK`].
fn blocks(pieces: &[Bytes]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut small: Vec<u8> = Vec::new();
    for piece in pieces {
        if piece.len() < COALESCE {
            small.extend_from_slice(piece);
            if small.len() >= CHUNK {
                out.push(Bytes::from(std::mem::take(&mut small)));
            }
            continue;
        }
        if !small.is_empty() {
            out.push(Bytes::from(std::mem::take(&mut small)));
        }
        let mut at = 0;
        while at < piece.len() {
            let end = (at + CHUNK).min(piece.len());
            out.push(piece.slice(at..end));
            at = end;
        }
    }
    if !small.is_empty() {
        out.push(Bytes::from(small));
    }
    out
}

/// The body of an INSERT of the records `runs` of each buffer, as pieces; the index of the
/// piece before which half of the rows has been sent (the `mid_insert` failpoint: the first
/// half sent, the request not ended); and the rows. Plain loops: an iterator adapter with
/// closures held across an await defeats rustc's `Send` inference for the sink task
/// (rust-lang/rust#110338).
fn body_of(parts: &[(&TableBuf, &[(usize, usize)])]) -> (Vec<Bytes>, Option<usize>, usize) {
    let mut total = 0usize;
    for &(buf, runs) in parts {
        for &(a, b) in runs {
            total += buf.rows(a, b);
        }
    }
    let half = total / 2;
    let mut body: Vec<Bytes> = Vec::new();
    let mut cut = None;
    let mut rows = 0usize;
    for &(buf, runs) in parts {
        for &(a, b) in runs {
            let run_rows = buf.rows(a, b);
            if cut.is_some() || half == 0 || rows + run_rows < half {
                // Whole runs at once, except the one that reaches half the rows.
                body.push(buf.slice(a, b));
                rows += run_rows;
                continue;
            }
            // Split after the record that reaches half the rows.
            let mut k = a;
            while rows < half {
                rows += buf.rows(k, k + 1);
                k += 1;
            }
            body.push(buf.slice(a, k));
            cut = Some(body.len());
            if k < b {
                body.push(buf.slice(k, b));
                rows += buf.rows(k, b);
            }
        }
    }
    (body, cut, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(recs: &[(i64, &[u8], u32)]) -> TableBuf {
        let mut t = TableBuf::default();
        for &(o, b, n) in recs {
            t.push(o, b, n);
        }
        t
    }

    #[test]
    fn the_body_is_the_runs_in_order_cut_where_half_the_rows_went() {
        let a = buf(&[(1, b"aa", 2), (2, b"b", 1), (3, b"cc", 2)]);
        let mut b = buf(&[(7, b"x", 1), (8, b"yyy", 3)]);
        b.freeze();
        // a: records 0 and 2 (4 rows); b: both (4 rows). Half = 4 rows, reached after a.
        let (body, cut, rows) = body_of(&[(&a, &[(0, 1), (2, 3)]), (&b, &[(0, 2)])]);
        let flat: Vec<u8> = body.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(flat, b"aaccxyyy");
        assert_eq!(rows, 8);
        let sent: usize = body[..cut.expect("a cut")].iter().map(Bytes::len).sum();
        assert_eq!(sent, 4, "aa and cc: 4 rows of 8 before the cut");
        // Inside one run: half of 5 rows (2) is reached after the first record.
        let (body, cut, rows) = body_of(&[(&a, &[(0, 3)])]);
        assert_eq!((cut, rows), (Some(1), 5));
        assert_eq!(&body[0][..], b"aa");
        assert_eq!(&body[1][..], b"bcc");
        // One row: no cut.
        let one = buf(&[(1, b"z", 1)]);
        assert_eq!(body_of(&[(&one, &[(0, 1)])]).1, None);
    }

    #[test]
    fn blocks_keep_the_bytes_in_order_and_bounded() {
        let big = Bytes::from(vec![7u8; CHUNK + 10]);
        let pieces = [
            Bytes::from_static(b"ab"),
            big.clone(),
            Bytes::from_static(b"c"),
        ];
        let out = blocks(&pieces);
        let lens: Vec<usize> = out.iter().map(Bytes::len).collect();
        assert_eq!(
            lens,
            vec![2, CHUNK, 10, 1],
            "short ones apart from long ones"
        );
        let flat: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        let want: Vec<u8> = pieces.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(flat, want);
        assert_eq!(out[1].as_ptr(), big.as_ptr(), "a long piece is not copied");
    }

    #[test]
    fn a_frozen_buffer_is_shared_then_taken_back_for_the_next_batch() {
        let mut t = buf(&[(1, b"hello", 1), (2, b"world", 1)]);
        t.freeze();
        let s = t.slice(1, 2);
        assert_eq!(&s[..], b"world");
        assert_eq!(t.frozen.as_ptr().wrapping_add(5), s.as_ptr(), "no copy");
        drop(s);
        t.clear();
        assert!(
            t.frozen.is_empty() && t.data.capacity() >= 10,
            "allocation kept"
        );
        t.push(3, b"again", 1);
        assert_eq!(&t.slice(0, 1)[..], b"again");
        // A request still holding the bytes: the buffer starts afresh.
        t.freeze();
        let held = t.slice(0, 1);
        t.clear();
        assert_eq!(&held[..], b"again");
        assert_eq!(t.records(), 0);
    }
}
