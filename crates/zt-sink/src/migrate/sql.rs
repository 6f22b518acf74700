//! Statement splitting and rendering of the DDL files.
//!
//! Files are written for a single server with the placeholder `{database}`. Rendering
//! substitutes the database and, for a cluster, rewrites each statement:
//!
//! - `CREATE TABLE [IF NOT EXISTS] {database}.t (...) ENGINE = XMergeTree(args) ...` of a
//!   table with Kafka coordinates (`_topic`, `_partition`) becomes a local table
//!   `t_local ON CLUSTER` with `ReplicatedXMergeTree('/clickhouse/tables/{shard}/db/t_local',
//!   '{replica}', args)`, plus `t` as a `Distributed` table over it sharded by
//!   `cityHash64(_topic, _partition)`, so every row of one Kafka partition lands on one shard
//!   and the sink's resume query sees them together;
//! - any other `CREATE TABLE` becomes a table replicated to every node (one replication
//!   path, no `{shard}`), e.g. `schema_migrations`;
//! - `CREATE [MATERIALIZED] VIEW` and `DROP` get `ON CLUSTER`; `ALTER TABLE` of a sharded
//!   table is applied to both the local and the Distributed table.
//!
//! `{shard}` and `{replica}` are ClickHouse server macros and stay as they are. Any other
//! statement kind is refused in cluster mode rather than rendered wrongly.

use std::collections::BTreeSet;

/// Splits a file into statements at `;` outside quotes and comments. Statements that are
/// empty or only comments are dropped. Leading comments stay with their statement.
pub fn split_statements(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = find_from(b, i, b"\n").unwrap_or(b.len());
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = find_from(b, i + 2, b"*/").map_or(b.len(), |j| j + 2);
            }
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b';' => {
                out.push(sql[start..i].to_owned());
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    if start < sql.len() {
        out.push(sql[start..].to_owned());
    }
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !strip_leading_comments(s).is_empty())
        .collect()
}

fn find_from(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    if from >= b.len() {
        return None;
    }
    b[from..]
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|p| p + from)
}

/// The statement without leading `--` and `/* */` comments and white space.
pub fn strip_leading_comments(s: &str) -> &str {
    let mut s = s.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.find('\n').map_or("", |n| &rest[n + 1..]).trim_start();
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.find("*/").map_or("", |n| &rest[n + 2..]).trim_start();
        } else {
            return s;
        }
    }
}

/// Where statements are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server.
    Single,
    /// A cluster of the servers' `remote_servers` configuration.
    Cluster(String),
}

/// Renders statements for a database and target. Keeps the set of sharded tables seen so
/// far, so later `ALTER`/`DROP` statements reach both the local and the Distributed table.
#[derive(Debug)]
pub struct Renderer {
    database: String,
    target: Target,
    sharded: BTreeSet<String>,
}

/// Why a statement cannot be rendered.
pub type RenderError = String;

impl Renderer {
    /// A renderer for `database` (already validated as a plain name).
    pub fn new(database: &str, target: Target) -> Self {
        Renderer {
            database: database.to_owned(),
            target,
            sharded: BTreeSet::new(),
        }
    }

    /// The statements to run for one statement of a file.
    pub fn render(&mut self, stmt: &str) -> Result<Vec<String>, RenderError> {
        let body = strip_leading_comments(stmt);
        let out = match &self.target {
            Target::Single => vec![body.to_owned()],
            Target::Cluster(cluster) => {
                let cluster = cluster.clone();
                self.render_cluster(body, &cluster)?
            }
        };
        Ok(out
            .into_iter()
            .map(|s| s.replace("{database}", &self.database))
            .collect())
    }

    fn render_cluster(&mut self, s: &str, cluster: &str) -> Result<Vec<String>, RenderError> {
        let words = Words::new(s);
        let on = format!("ON CLUSTER '{cluster}'");
        if words.starts_with(&["CREATE", "TABLE"]) {
            return self.render_create_table(s, &words, cluster);
        }
        for kw in [
            &["CREATE", "MATERIALIZED", "VIEW"][..],
            &["CREATE", "VIEW"],
            &["DROP", "VIEW"],
        ] {
            if words.starts_with(kw) {
                let (_, name_end) = words.name_after(kw)?;
                return Ok(vec![format!("{} {on}{}", &s[..name_end], &s[name_end..])]);
            }
        }
        for kw in [&["ALTER", "TABLE"][..], &["DROP", "TABLE"]] {
            if words.starts_with(kw) {
                let (name_start, name_end) = words.name_after(kw)?;
                let name = &s[name_start..name_end];
                let mut out = Vec::new();
                if self.sharded.contains(name) {
                    out.push(format!(
                        "{}{}_local {on}{}",
                        &s[..name_start],
                        name,
                        &s[name_end..]
                    ));
                }
                out.push(format!("{} {on}{}", &s[..name_end], &s[name_end..]));
                return Ok(out);
            }
        }
        Err(format!(
            "cannot render for a cluster (only CREATE TABLE/VIEW, ALTER TABLE and DROP are supported): {}",
            s.lines().next().unwrap_or_default()
        ))
    }

    fn render_create_table(
        &mut self,
        s: &str,
        words: &Words<'_>,
        cluster: &str,
    ) -> Result<Vec<String>, RenderError> {
        let (name_start, name_end) = words.name_after(&["CREATE", "TABLE"])?;
        let name = &s[name_start..name_end];
        let short = name.rsplit('.').next().unwrap_or(name);
        let open = s[name_end..]
            .find('(')
            .map(|p| p + name_end)
            .ok_or("CREATE TABLE without a column list")?;
        let close = matching_paren(s, open).ok_or("unbalanced parentheses")?;
        let columns = &s[open..=close];
        let rest = &s[close + 1..];
        let engine_at = find_word(rest, "ENGINE").ok_or("CREATE TABLE without ENGINE")?;
        let after_engine = rest[engine_at + 6..].trim_start();
        let after_eq = after_engine
            .strip_prefix('=')
            .ok_or("ENGINE without =")?
            .trim_start();
        let engine_len = after_eq
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after_eq.len());
        let engine = &after_eq[..engine_len];
        if !engine.ends_with("MergeTree") || engine.starts_with("Replicated") {
            return Err(format!(
                "engine {engine} of {name}: only non-replicated *MergeTree engines can be rendered for a cluster"
            ));
        }
        let mut tail = &after_eq[engine_len..];
        let mut args = "";
        if tail.starts_with('(') {
            let end = matching_paren(tail, 0).ok_or("unbalanced engine arguments")?;
            args = tail[1..end].trim();
            tail = &tail[end + 1..];
        }
        let head = &s[..name_start];
        let db = "{database}";
        let sharded = has_column(columns, "_topic") && has_column(columns, "_partition");
        let on = format!("ON CLUSTER '{cluster}'");
        let comma_args = if args.is_empty() {
            String::new()
        } else {
            format!(", {args}")
        };
        if sharded {
            self.sharded.insert(name.to_owned());
            let local = format!(
                "{head}{name}_local {on} {columns}\nENGINE = Replicated{engine}('/clickhouse/tables/{{shard}}/{db}/{short}_local', '{{replica}}'{comma_args}){tail}"
            );
            let dist = format!(
                "{head}{name} {on} AS {name}_local\nENGINE = Distributed('{cluster}', '{db}', '{short}_local', cityHash64(_topic, _partition))"
            );
            Ok(vec![local, dist])
        } else {
            Ok(vec![format!(
                "{head}{name} {on} {columns}\nENGINE = Replicated{engine}('/clickhouse/tables/all/{db}/{short}', '{{replica}}'{comma_args}){tail}"
            )])
        }
    }
}

/// An `ALTER TABLE t [ON CLUSTER 'c'] ADD COLUMN IF NOT EXISTS a T, ADD COLUMN IF NOT
/// EXISTS b U, ...` statement, taken apart. ClickHouse 18.16 does not parse `IF NOT EXISTS`
/// there, so `zt migrate` runs such a statement as a plain `ADD COLUMN` of the columns the
/// table lacks ([`AddColumns::statement`]), which every version understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddColumns {
    /// `ALTER TABLE t [ON CLUSTER 'c'] `.
    pub head: String,
    /// The table as written (`db.t`).
    pub table: String,
    /// Per column: its name and its `ADD COLUMN name type ...` clause without
    /// `IF NOT EXISTS`.
    pub columns: Vec<(String, String)>,
}

impl AddColumns {
    /// Parses `stmt`; `None` unless it is an `ALTER TABLE` whose every command is an
    /// `ADD COLUMN IF NOT EXISTS`.
    pub fn parse(stmt: &str) -> Option<Self> {
        let s = strip_leading_comments(stmt);
        let words = Words::new(s);
        if !words.starts_with(&["ALTER", "TABLE"]) {
            return None;
        }
        let (name_start, name_end) = words.name_after(&["ALTER", "TABLE"]).ok()?;
        let add = name_end + find_word(&s[name_end..], "ADD")?;
        let mut columns = Vec::new();
        for cmd in split_top_level_commas(&s[add..]) {
            let w: Vec<&str> = cmd.split_whitespace().collect();
            let kw: Vec<String> = w.iter().take(5).map(|x| x.to_ascii_uppercase()).collect();
            if w.len() < 7 || kw != ["ADD", "COLUMN", "IF", "NOT", "EXISTS"] {
                return None;
            }
            let name = w[5].trim_matches('`').to_owned();
            columns.push((name, format!("ADD COLUMN {}", w[5..].join(" "))));
        }
        if columns.is_empty() {
            return None;
        }
        Some(AddColumns {
            head: s[..add].to_owned(),
            table: s[name_start..name_end].to_owned(),
            columns,
        })
    }

    /// The statement adding only the columns `present` does not name; `None` when there
    /// is none to add.
    pub fn statement(&self, present: &[String]) -> Option<String> {
        let missing: Vec<&str> = self
            .columns
            .iter()
            .filter(|(name, _)| !present.iter().any(|p| p == name))
            .map(|(_, clause)| clause.as_str())
            .collect();
        if missing.is_empty() {
            None
        } else {
            Some(format!("{}{}", self.head, missing.join(", ")))
        }
    }
}

/// `s` split at commas outside parentheses and quotes, each part trimmed.
fn split_top_level_commas(s: &str) -> Vec<&str> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let (mut depth, mut start, mut i) = (0usize, 0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(s[start..].trim());
    out.into_iter().filter(|p| !p.is_empty()).collect()
}

/// The upper-cased leading words of a statement, with their byte positions.
struct Words<'a> {
    s: &'a str,
    words: Vec<(usize, usize)>,
}

impl<'a> Words<'a> {
    fn new(s: &'a str) -> Self {
        let mut words = Vec::new();
        let mut i = 0;
        let b = s.as_bytes();
        while i < b.len() && words.len() < 12 {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let start = i;
            while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'(' {
                i += 1;
            }
            if start == i {
                break;
            }
            words.push((start, i));
        }
        Words { s, words }
    }

    fn upper(&self, k: usize) -> Option<String> {
        self.words
            .get(k)
            .map(|&(a, b)| self.s[a..b].to_ascii_uppercase())
    }

    fn starts_with(&self, kw: &[&str]) -> bool {
        kw.iter()
            .enumerate()
            .all(|(k, w)| self.upper(k).as_deref() == Some(*w))
    }

    /// Byte range of the object name after `kw` and an optional `IF [NOT] EXISTS`.
    fn name_after(&self, kw: &[&str]) -> Result<(usize, usize), RenderError> {
        let mut k = kw.len();
        if self.upper(k).as_deref() == Some("IF") {
            k += if self.upper(k + 1).as_deref() == Some("NOT") {
                3
            } else {
                2
            };
        }
        self.words
            .get(k)
            .copied()
            .ok_or_else(|| "statement without an object name".to_owned())
    }
}

fn matching_paren(s: &str, open: usize) -> Option<usize> {
    let b = s.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn find_word(s: &str, word: &str) -> Option<usize> {
    let up = s.to_ascii_uppercase();
    let mut from = 0;
    while let Some(p) = up[from..].find(word).map(|p| p + from) {
        let before = p == 0 || !up.as_bytes()[p - 1].is_ascii_alphanumeric();
        let after = up
            .as_bytes()
            .get(p + word.len())
            .is_none_or(|c| !c.is_ascii_alphanumeric() && *c != b'_');
        if before && after {
            return Some(p);
        }
        from = p + word.len();
    }
    None
}

fn has_column(columns: &str, name: &str) -> bool {
    columns
        .split([',', '(', '\n'])
        .any(|c| c.split_whitespace().next() == Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_column_if_not_exists_is_taken_apart() {
        let s = "-- c\nALTER TABLE zt.profiles_local ON CLUSTER 'p'\n    ADD COLUMN IF NOT EXISTS a String,\n    add column if not exists `b` Nullable(Float64) DEFAULT (1, 2)";
        let a = AddColumns::parse(s).unwrap();
        assert_eq!(a.table, "zt.profiles_local");
        assert_eq!(a.head, "ALTER TABLE zt.profiles_local ON CLUSTER 'p'\n    ");
        assert_eq!(
            a.statement(&[]).unwrap(),
            "ALTER TABLE zt.profiles_local ON CLUSTER 'p'\n    ADD COLUMN a String, ADD COLUMN `b` Nullable(Float64) DEFAULT (1, 2)"
        );
        assert_eq!(
            a.statement(&["a".into()]).unwrap(),
            "ALTER TABLE zt.profiles_local ON CLUSTER 'p'\n    ADD COLUMN `b` Nullable(Float64) DEFAULT (1, 2)"
        );
        assert_eq!(a.statement(&["a".into(), "b".into()]), None);
        assert_eq!(AddColumns::parse("ALTER TABLE t ADD COLUMN a String"), None);
        assert_eq!(
            AddColumns::parse("ALTER TABLE t ADD COLUMN IF NOT EXISTS a String, DROP COLUMN b"),
            None
        );
        assert_eq!(
            AddColumns::parse("CREATE TABLE t (a String) ENGINE = Log"),
            None
        );
    }

    #[test]
    fn splits_outside_quotes_and_comments() {
        let sql = "-- a; comment\nCREATE TABLE a (x String DEFAULT ';') ENGINE = MergeTree() ORDER BY x;\n\
                   /* b; */ SELECT 'it''s; fine', \"q;\" ;\n-- only a comment;\n";
        let st = split_statements(sql);
        assert_eq!(st.len(), 2, "{st:?}");
        assert!(st[0].ends_with("ORDER BY x"));
        assert!(st[1].contains("'it''s; fine'"));
    }

    const EVENTS: &str = "-- comment\nCREATE TABLE IF NOT EXISTS {database}.events\n(\n    event_id String,\n    event_time DateTime('UTC') MATERIALIZED toDateTime(intDiv(t, 1000), 'UTC'),\n    _topic String,\n    _partition Int32,\n    _offset Int64\n)\nENGINE = MergeTree()\nPARTITION BY toYYYYMM(d)\nORDER BY (d, event_id)";

    #[test]
    fn single_server_only_substitutes_the_database() {
        let mut r = Renderer::new("zt", Target::Single);
        let out = r.render(EVENTS).unwrap();
        assert_eq!(out.len(), 1);
        assert!(out[0].starts_with("CREATE TABLE IF NOT EXISTS zt.events\n("));
        assert!(out[0].contains("ENGINE = MergeTree()"));
        assert!(!out[0].contains("{database}"));
    }

    #[test]
    fn cluster_renders_replicated_local_and_distributed() {
        let mut r = Renderer::new("zt", Target::Cluster("prod".into()));
        let out = r.render(EVENTS).unwrap();
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            out[0].starts_with("CREATE TABLE IF NOT EXISTS zt.events_local ON CLUSTER 'prod' ("),
            "{}",
            out[0]
        );
        assert!(out[0].contains(
            "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/zt/events_local', '{replica}')\nPARTITION BY toYYYYMM(d)\nORDER BY (d, event_id)"
        ), "{}", out[0]);
        assert_eq!(
            out[1],
            "CREATE TABLE IF NOT EXISTS zt.events ON CLUSTER 'prod' AS zt.events_local\n\
             ENGINE = Distributed('prod', 'zt', 'events_local', cityHash64(_topic, _partition))"
        );
        // Later statements on a sharded table reach both tables.
        let alter = r
            .render("ALTER TABLE {database}.events ADD COLUMN x UInt8")
            .unwrap();
        assert_eq!(
            alter,
            vec![
                "ALTER TABLE zt.events_local ON CLUSTER 'prod' ADD COLUMN x UInt8",
                "ALTER TABLE zt.events ON CLUSTER 'prod' ADD COLUMN x UInt8",
            ]
        );
    }

    #[test]
    fn cluster_keeps_engine_arguments_and_replicates_unsharded_tables() {
        let mut r = Renderer::new("zt", Target::Cluster("c1".into()));
        let out = r
            .render(
                "CREATE TABLE IF NOT EXISTS {database}.profiles (person_id String, version UInt64, \
                 _topic String, _partition Int32, _offset Int64) ENGINE = ReplacingMergeTree(version) ORDER BY person_id",
            )
            .unwrap();
        assert!(out[0].contains(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/zt/profiles_local', '{replica}', version) ORDER BY person_id"
        ), "{}", out[0]);
        let out = r
            .render(
                "CREATE TABLE IF NOT EXISTS {database}.schema_migrations (version UInt32, name String) \
                 ENGINE = MergeTree() ORDER BY version",
            )
            .unwrap();
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("ON CLUSTER 'c1'"));
        assert!(out[0].contains(
            "ReplicatedMergeTree('/clickhouse/tables/all/zt/schema_migrations', '{replica}')"
        ));
    }

    #[test]
    fn cluster_views_get_on_cluster_and_unknown_statements_are_refused() {
        let mut r = Renderer::new("zt", Target::Cluster("c1".into()));
        let out = r
            .render("CREATE VIEW IF NOT EXISTS {database}.kpi AS SELECT 1")
            .unwrap();
        assert_eq!(
            out,
            vec!["CREATE VIEW IF NOT EXISTS zt.kpi ON CLUSTER 'c1' AS SELECT 1"]
        );
        assert!(r.render("INSERT INTO {database}.x VALUES (1)").is_err());
        assert!(
            r.render("CREATE TABLE {database}.x (a String) ENGINE = Log")
                .is_err()
        );
    }
}
