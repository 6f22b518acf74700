//! ClickHouse side of the sink: one INSERT per table per partition batch (RowBinary), and
//! the resume query that reads which records of a partition a table already holds.

use std::time::{Duration, Instant};

use clickhouse::Client;
use serde::Deserialize;

use crate::config::ClickHouseConfig;
use crate::error::{Error, Result};
use crate::failpoint::{self, Point};
use crate::metrics::SinkMetrics;
use crate::rows::SinkRow;
use crate::sink::TABLES;

/// Inserts rows and reads resume state.
#[derive(Clone)]
pub(crate) struct Writer {
    client: Client,
    timeout: Duration,
    metrics: SinkMetrics,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Present {
    t: u8,
    o: i64,
}

impl Writer {
    pub(crate) fn new(cfg: &ClickHouseConfig, timeout: Duration, metrics: SinkMetrics) -> Self {
        let mut client = cfg.client();
        if !cfg.cluster.is_empty() {
            // An INSERT into a Distributed table must only return once the shards have
            // the rows, or "insert ended" would not mean "stored".
            client = client.with_setting("insert_distributed_sync", "1");
        }
        Writer {
            client,
            timeout,
            metrics,
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

    /// One INSERT of `rows` into `R::TABLE`; returns when the server has stored them.
    pub(crate) async fn insert<R: SinkRow>(&self, rows: &[&R]) -> Result<()> {
        failpoint::hit(Point::BeforeInsert);
        let op = || format!("insert into {}", R::TABLE);
        let started = Instant::now();
        let mut ins = self
            .client
            .insert::<R>(R::TABLE)
            .await
            .map_err(|e| Error::ch(op(), e))?
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        let half = rows.len() / 2;
        let mut bytes = 0usize;
        for (i, r) in rows.iter().enumerate() {
            if i == half && i > 0 {
                failpoint::hit(Point::MidInsert);
            }
            bytes += r.approx_bytes();
            ins.write(*r).await.map_err(|e| Error::ch(op(), e))?;
        }
        ins.end().await.map_err(|e| Error::ch(op(), e))?;
        failpoint::hit(Point::AfterInsert);
        let m = &self.metrics;
        m.insert_duration
            .with_label_values(&[R::TABLE])
            .observe(started.elapsed().as_secs_f64());
        m.rows_inserted
            .with_label_values(&[R::TABLE])
            .inc_by(rows.len() as u64);
        m.bytes_inserted
            .with_label_values(&[R::TABLE])
            .inc_by(bytes as u64);
        Ok(())
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
