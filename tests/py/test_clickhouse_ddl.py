"""Every ClickHouse DDL file of schemas/clickhouse/ applies, in order, on a current
ClickHouse engine (chdb, in-process), with the same `{database}` substitution and
statement splitting as `zt migrate`. The live tests apply the same files on Debian's
ClickHouse 18.16, so together they prove both generations accept the schema.

Also a negative control: a statement 18.16-era SQL would never accept on any version
(a syntax error) makes the same apply step fail, so the check can fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

chdb = pytest.importorskip("chdb", reason="chdb-core is in tests/py/requirements.txt")
from chdb import session as chs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DDL_DIR = REPO / "schemas" / "clickhouse"
FILE_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
DATABASE = "zhongtai_ddl_check"


def ddl_files() -> list[Path]:
    return sorted(p for p in DDL_DIR.iterdir() if FILE_RE.match(p.name))


def split_statements(sql: str) -> list[str]:
    """Splits on `;` outside quotes and comments, as crates/zt-sink/src/migrate/sql.rs does."""
    out, cur, i, n = [], [], 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            cur.append(sql[i:j])
            i = j
            continue
        if c == "/" and sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            cur.append(sql[i:j])
            i = j
            continue
        if c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            cur.append(sql[i : j + 1])
            i = j + 1
            continue
        if c == ";":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return [s.strip() for s in out if strip_comments(s).strip()]


def strip_comments(s: str) -> str:
    return re.sub(r"--[^\n]*", "", s)


def apply_all(sess, files: list[Path]) -> None:
    sess.query(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    for f in files:
        for stmt in split_statements(f.read_text(encoding="utf-8")):
            try:
                sess.query(stmt.replace("{database}", DATABASE))
            except Exception as e:  # chdb raises a plain RuntimeError with the server text
                raise AssertionError(f"{f.name}: {e}\n{stmt}") from e


def test_ddl_files_exist_and_are_numbered() -> None:
    files = ddl_files()
    assert files, "no DDL files found"
    versions = [int(FILE_RE.match(f.name).group(1)) for f in files]
    assert len(versions) == len(set(versions)), "two files share a version"
    others = [
        p.name for p in DDL_DIR.glob("*.sql") if not FILE_RE.match(p.name)
    ]
    assert not others, f"files zt migrate would ignore: {others}"


def test_every_ddl_file_applies_on_current_clickhouse(tmp_path: Path) -> None:
    sess = chs.Session(str(tmp_path / "chdb"))
    try:
        files = ddl_files()
        apply_all(sess, files)
        # Applying twice is a no-op (IF NOT EXISTS everywhere), as zt migrate assumes when
        # it re-runs a file that failed half-way.
        apply_all(sess, files)
        tables = sess.query(
            f"SELECT name FROM system.tables WHERE database = '{DATABASE}' ORDER BY name",
            "CSV",
        ).bytes().decode()
        for t in ("events", "orders", "order_lines", "shipments", "tickets", "ad_spend", "customers"):
            assert f'"{t}"' in tables, tables
        # The sink's data tables all carry the Kafka coordinates.
        cols = sess.query(
            f"SELECT table, groupArray(name) FROM system.columns WHERE database = '{DATABASE}' "
            "AND name IN ('_topic', '_partition', '_offset') GROUP BY table HAVING count() = 3",
            "CSV",
        ).bytes().decode()
        assert cols.count("\n") >= 11, cols
    finally:
        sess.close()


def test_a_bad_statement_fails_the_check(tmp_path: Path) -> None:
    sess = chs.Session(str(tmp_path / "chdb"))
    bad = tmp_path / "0001_bad.sql"
    bad.write_text("CREATE TABLE {database}.x (a Strin) ENGINE = MergeTree() ORDER BY a;\n")
    try:
        with pytest.raises(AssertionError, match="0001_bad.sql"):
            apply_all(sess, [bad])
    finally:
        sess.close()
