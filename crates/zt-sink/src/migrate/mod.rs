//! `zt migrate`: versioned ClickHouse DDL.
//!
//! Files are `schemas/clickhouse/NNNN_name.sql` (embedded in the binary at build time, or
//! read from a directory with `--dir`), applied in version order. Each applied file is
//! recorded in `<database>.schema_migrations` with its SHA-256 checksum; applied files are
//! skipped on the next run, and a run refuses to do anything when an applied file's
//! checksum changed or the database records a version no file has. Statements must be
//! idempotent (`IF NOT EXISTS`): ClickHouse has no transactional DDL, so a file that failed
//! half-way is re-run from its start. Two concurrent runs are not coordinated; run one.
//! See docs/migrations.md.

pub mod sql;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::ClickHouseConfig;
use crate::error::{Error, Result};
use sql::{AddColumns, Renderer, Target, split_statements};

include!(concat!(env!("OUT_DIR"), "/ddl_files.rs"));

/// Name of the table recording applied migrations.
pub const MIGRATIONS_TABLE: &str = "schema_migrations";

const MIGRATIONS_DDL: &str = "CREATE TABLE IF NOT EXISTS {database}.schema_migrations\n(\n    version UInt32,\n    name String,\n    checksum String,\n    applied_at DateTime\n)\nENGINE = MergeTree()\nORDER BY version";

/// One versioned DDL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationFile {
    /// The number before the first `_`.
    pub version: u32,
    /// The file name, e.g. `0001_events.sql`.
    pub name: String,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub checksum: String,
    /// The file's text.
    pub text: String,
}

impl MigrationFile {
    /// Parses a file name and computes the checksum. `None` for files that are not
    /// migrations (no `NNNN_` prefix or not `.sql`).
    pub fn new(name: &str, text: &str) -> Result<Option<Self>> {
        let Some(stem) = name.strip_suffix(".sql") else {
            return Ok(None);
        };
        let Some((num, rest)) = stem.split_once('_') else {
            return Ok(None);
        };
        if num.len() != 4 || !num.chars().all(|c| c.is_ascii_digit()) {
            return Ok(None);
        }
        if rest.is_empty()
            || !rest
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(Error::MigrationFile {
                file: name.to_owned(),
                reason: "name must be NNNN_lower_case_words.sql".into(),
            });
        }
        let version: u32 = num.parse().map_err(|_| Error::MigrationFile {
            file: name.to_owned(),
            reason: "bad version number".into(),
        })?;
        Ok(Some(MigrationFile {
            version,
            name: name.to_owned(),
            checksum: hex::encode(Sha256::digest(text.as_bytes())),
            text: text.to_owned(),
        }))
    }
}

fn sorted_checked(mut files: Vec<MigrationFile>) -> Result<Vec<MigrationFile>> {
    files.sort_by_key(|f| f.version);
    for w in files.windows(2) {
        if w[0].version == w[1].version {
            return Err(Error::MigrationFile {
                file: w[1].name.clone(),
                reason: format!("version {} is also used by {}", w[1].version, w[0].name),
            });
        }
    }
    Ok(files)
}

/// The migration files embedded in the binary.
pub fn embedded_files() -> Result<Vec<MigrationFile>> {
    let mut out = Vec::new();
    for (name, text) in DDL_FILES {
        out.extend(MigrationFile::new(name, text)?);
    }
    sorted_checked(out)
}

/// The migration files of a directory.
pub fn files_in_dir(dir: &Path) -> Result<Vec<MigrationFile>> {
    let io = |source| Error::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        out.extend(MigrationFile::new(name, &text)?);
    }
    sorted_checked(out)
}

/// Renders every statement of `files` (in order) for a database and target.
pub fn render_files(
    files: &[MigrationFile],
    database: &str,
    target: &Target,
) -> Result<Vec<(MigrationFile, Vec<String>)>> {
    let mut r = Renderer::new(database, target.clone());
    let mut out = Vec::new();
    for f in files {
        let mut stmts = Vec::new();
        for s in split_statements(&f.text) {
            stmts.extend(r.render(&s).map_err(|reason| Error::MigrationFile {
                file: f.name.clone(),
                reason,
            })?);
        }
        out.push((f.clone(), stmts));
    }
    Ok(out)
}

/// The statements that create the migrations table itself.
pub fn migrations_table_ddl(database: &str, target: &Target) -> Result<Vec<String>> {
    Renderer::new(database, target.clone())
        .render(MIGRATIONS_DDL)
        .map_err(|reason| Error::MigrationFile {
            file: MIGRATIONS_TABLE.into(),
            reason,
        })
}

/// A migration recorded as applied.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct Applied {
    /// Version.
    pub version: u32,
    /// File name.
    pub name: String,
    /// Checksum when applied.
    pub checksum: String,
}

/// What a run will do.
#[derive(Debug)]
pub struct Plan {
    /// Files already applied (checksums verified).
    pub applied: Vec<MigrationFile>,
    /// Files to apply, in order, with their rendered statements.
    pub pending: Vec<(MigrationFile, Vec<String>)>,
    /// Statements that create the database and the migrations table.
    pub setup: Vec<String>,
}

/// Options of `zt migrate`.
#[derive(Debug, Clone, Default)]
pub struct MigrateOptions {
    /// Cluster name (overrides `clickhouse.cluster`); `None` uses the configuration.
    pub cluster: Option<String>,
    /// Read files from this directory instead of the embedded ones.
    pub dir: Option<std::path::PathBuf>,
}

fn target(cfg: &ClickHouseConfig, opts: &MigrateOptions) -> Result<Target> {
    let cluster = opts.cluster.clone().unwrap_or_else(|| cfg.cluster.clone());
    if cluster.is_empty() {
        return Ok(Target::Single);
    }
    if !crate::config::is_plain_name(&cluster, true) {
        return Err(Error::Config {
            key: "--cluster".into(),
            reason: "must be letters, digits, _ or -".into(),
        });
    }
    Ok(Target::Cluster(cluster))
}

/// Computes the plan: reads the applied migrations (when the table exists), verifies their
/// checksums and renders the pending files. Changes nothing.
pub async fn plan(cfg: &ClickHouseConfig, opts: &MigrateOptions) -> Result<Plan> {
    cfg.validate()?;
    let target = target(cfg, opts)?;
    let files = match &opts.dir {
        Some(d) => files_in_dir(d)?,
        None => embedded_files()?,
    };
    let applied = read_applied(cfg).await?;
    let mut done = Vec::new();
    let mut todo = Vec::new();
    for a in &applied {
        if !files.iter().any(|f| f.version == a.version) {
            return Err(Error::UnknownApplied {
                version: a.version,
                name: a.name.clone(),
            });
        }
    }
    for f in &files {
        match applied.iter().find(|a| a.version == f.version) {
            Some(a) if a.checksum != f.checksum => {
                return Err(Error::ChecksumMismatch {
                    file: f.name.clone(),
                    applied: a.checksum.clone(),
                    current: f.checksum.clone(),
                });
            }
            Some(_) => done.push(f.clone()),
            None => todo.push(f.clone()),
        }
    }
    let on = match &target {
        Target::Single => String::new(),
        Target::Cluster(c) => format!(" ON CLUSTER '{c}'"),
    };
    let mut setup = vec![format!(
        "CREATE DATABASE IF NOT EXISTS {}{on}",
        cfg.database
    )];
    setup.extend(migrations_table_ddl(&cfg.database, &target)?);
    // Every file is rendered, applied ones too, so that the renderer knows the sharded
    // tables an applied file created (a pending `ALTER TABLE` of one must reach its
    // `_local` table as well); only the pending files' statements are kept.
    let pending = render_files(&files, &cfg.database, &target)?
        .into_iter()
        .filter(|(f, _)| todo.iter().any(|t| t.version == f.version))
        .collect();
    Ok(Plan {
        applied: done,
        pending,
        setup,
    })
}

async fn read_applied(cfg: &ClickHouseConfig) -> Result<Vec<Applied>> {
    let server = cfg.server_client();
    let exists: u8 = server
        .query("SELECT count() > 0 FROM system.tables WHERE database = ? AND name = ?")
        .bind(&cfg.database)
        .bind(MIGRATIONS_TABLE)
        .fetch_one()
        .await
        .map_err(|e| Error::ch("read migrations", e))?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    // A version recorded twice (two concurrent runs) is one applied migration.
    cfg.client()
        .query(
            "SELECT version, any(name), any(checksum) FROM schema_migrations \
             GROUP BY version ORDER BY version",
        )
        .fetch_all::<Applied>()
        .await
        .map_err(|e| Error::ch("read migrations", e))
}

#[derive(Debug, serde::Serialize, clickhouse::Row)]
struct AppliedRow {
    version: u32,
    name: String,
    checksum: String,
    applied_at: u32,
}

/// Applies the plan's pending files in order, recording each after its last statement.
/// `ALTER TABLE ... ADD COLUMN IF NOT EXISTS` statements run as a plain `ADD COLUMN` of the
/// columns the table lacks (ClickHouse 18.16 does not parse `IF NOT EXISTS` there; see
/// [`AddColumns`]). Returns the names of the files applied.
pub async fn apply(cfg: &ClickHouseConfig, plan: &Plan) -> Result<Vec<String>> {
    let server = cfg.server_client();
    for s in &plan.setup {
        server
            .query(s)
            .execute()
            .await
            .map_err(|e| Error::ch("create migrations table", e))?;
    }
    let client = cfg.client();
    let mut done = Vec::new();
    for (file, stmts) in &plan.pending {
        for s in stmts {
            let op = || format!("migration {}", file.name);
            let stmt = match AddColumns::parse(s) {
                Some(add) => {
                    let (db, table) = add
                        .table
                        .split_once('.')
                        .unwrap_or((cfg.database.as_str(), add.table.as_str()));
                    let present: Vec<String> = server
                        .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
                        .bind(db)
                        .bind(table)
                        .fetch_all()
                        .await
                        .map_err(|e| Error::ch(op(), e))?;
                    match add.statement(&present) {
                        Some(stmt) => stmt,
                        None => continue,
                    }
                }
                None => s.clone(),
            };
            server
                .query(&stmt)
                .execute()
                .await
                .map_err(|e| Error::ch(op(), e))?;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut ins = client
            .insert::<AppliedRow>(MIGRATIONS_TABLE)
            .await
            .map_err(|e| Error::ch("record migration", e))?;
        ins.write(&AppliedRow {
            version: file.version,
            name: file.name.clone(),
            checksum: file.checksum.clone(),
            applied_at: u32::try_from(now).unwrap_or(u32::MAX),
        })
        .await
        .map_err(|e| Error::ch("record migration", e))?;
        ins.end()
            .await
            .map_err(|e| Error::ch("record migration", e))?;
        tracing::info!(file = %file.name, statements = stmts.len(), "migration applied");
        done.push(file.name.clone());
    }
    Ok(done)
}

/// The plan as text for `--dry-run`: what is applied, what would run, every statement.
pub fn describe(plan: &Plan) -> String {
    let mut out = String::new();
    for f in &plan.applied {
        out.push_str(&format!("applied  {} ({})\n", f.name, &f.checksum[..12]));
    }
    if plan.pending.is_empty() {
        out.push_str("nothing to apply\n");
        return out;
    }
    out.push_str("\n-- setup\n");
    for s in &plan.setup {
        out.push_str(&format!("{s};\n"));
    }
    for (f, stmts) in &plan.pending {
        out.push_str(&format!(
            "\n-- pending {} ({})\n",
            f.name,
            &f.checksum[..12]
        ));
        for s in stmts {
            out.push_str(&format!("{s};\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_files_are_numbered_and_render_for_both_targets() {
        let files = embedded_files().unwrap();
        assert!(files.len() >= 9, "{}", files.len());
        assert_eq!(files[0].name, "0001_events.sql");
        let single = render_files(&files, "zt", &Target::Single).unwrap();
        assert!(single.iter().all(|(_, s)| !s.is_empty()));
        assert!(
            single
                .iter()
                .flat_map(|(_, s)| s)
                .all(|s| !s.contains("{database}"))
        );
        let cluster = render_files(&files, "zt", &Target::Cluster("prod".into())).unwrap();
        let all: Vec<&String> = cluster.iter().flat_map(|(_, s)| s).collect();
        // Every sharded data table gets a local replicated table and a Distributed one.
        for t in ["events", "orders", "order_lines", "profiles"] {
            assert!(
                all.iter()
                    .any(|s| s.contains(&format!("zt.{t}_local ON CLUSTER 'prod'"))
                        && s.contains("ENGINE = Replicated")),
                "{t}"
            );
            assert!(
                all.iter().any(|s| s.contains(&format!(
                    "Distributed('prod', 'zt', '{t}_local', cityHash64(_topic, _partition))"
                ))),
                "{t}"
            );
        }
        assert!(all.iter().all(|s| s.contains("ON CLUSTER 'prod'")));
    }

    #[test]
    fn file_names_and_versions_are_checked() {
        assert!(MigrationFile::new("README.md", "").unwrap().is_none());
        assert!(MigrationFile::new("01_x.sql", "").unwrap().is_none());
        assert!(MigrationFile::new("0001_Bad-Name.sql", "").is_err());
        let a = MigrationFile::new("0001_a.sql", "x").unwrap().unwrap();
        let b = MigrationFile::new("0001_b.sql", "y").unwrap().unwrap();
        assert!(sorted_checked(vec![a.clone(), b]).is_err());
        assert_eq!(a.version, 1);
        assert_eq!(a.checksum.len(), 64);
    }

    #[test]
    fn files_in_dir_reads_only_migrations() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("0002_b.sql"), "SELECT 2").unwrap();
        std::fs::write(d.path().join("0001_a.sql"), "SELECT 1").unwrap();
        std::fs::write(d.path().join("README.md"), "x").unwrap();
        let f = files_in_dir(d.path()).unwrap();
        assert_eq!(
            f.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            ["0001_a.sql", "0002_b.sql"]
        );
    }
}
