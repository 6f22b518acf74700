"""The KPI views (schemas/clickhouse/0100_* and up, documented in docs/bi.md) on a small
hand-worked fixture, on two ClickHouse generations:

- a current engine in-process (chdb-core, ClickHouse 26.x);
- Debian's ClickHouse 18.16 of the local stack at http://127.0.0.1:8123 (or
  ZT_TEST_CLICKHOUSE_URL), skipped with the reason only when that server does not answer.

For each engine, every schemas/clickhouse/*.sql file is applied in filename order, with
`{database}` replaced by a database unique to this run (dropped at the end) and split
into statements as `zt migrate` does. Then the fixture below is inserted and every KPI is
compared with numbers worked out by hand in the comments, never computed by the views.

Negative controls: the same fixture with one more paid order for c02 must move the
repurchase rate off the asserted 3/7 (so that assertion can fail), and the fixture with a
resolved person_id joining c05 and c09 must make the views count them as one person (the
identity switch works without changing a view).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.error
import urllib.request
import uuid
from calendar import timegm
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DDL_DIR = REPO / "schemas" / "clickhouse"
BI_DOC = REPO / "docs" / "bi.md"
FILE_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
LIVE_URL = os.environ.get("ZT_TEST_CLICKHOUSE_URL", "http://127.0.0.1:8123").rstrip("/") + "/"


# ---------------------------------------------------------------------------------------
# Engines


def split_statements(sql: str) -> list[str]:
    """Splits at `;` outside quotes and comments, like crates/zt-sink/src/migrate/sql.rs."""
    out, cur, i, n = [], [], 0, len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            cur.append(sql[i:j])
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            cur.append(sql[i:j])
            i = j
        elif c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            cur.append(sql[i : j + 1])
            i = j + 1
        elif c == ";":
            out.append("".join(cur))
            cur = []
            i += 1
        else:
            cur.append(c)
            i += 1
    out.append("".join(cur))
    stmts = [s.strip() for s in out]
    return [s for s in stmts if re.sub(r"--[^\n]*|/\*.*?\*/", "", s, flags=re.S).strip()]


def _convert(value, ch_type: str):
    """JSON output quotes 64-bit integers; turn them back into ints by the column type."""
    if value is None:
        return None
    base = ch_type.replace("Nullable(", "").rstrip(")")
    if isinstance(value, str) and re.fullmatch(r"U?Int(8|16|32|64)", base):
        return int(value)
    return value


class Engine:
    name = "?"

    def execute(self, sql: str) -> str:
        raise NotImplementedError

    def rows(self, sql: str) -> list[dict]:
        doc = json.loads(self.execute(sql + "\nFORMAT JSON"))
        types = {m["name"]: m["type"] for m in doc["meta"]}
        return [{k: _convert(v, types[k]) for k, v in r.items()} for r in doc["data"]]


class ChdbEngine(Engine):
    name = "chdb"

    def __init__(self) -> None:
        from chdb import session as chs

        self._dir = tempfile.TemporaryDirectory(prefix="zt-kpi-chdb-")
        self._sess = chs.Session(self._dir.name)
        self.version = self.execute("SELECT version() FORMAT TSV").strip()

    def execute(self, sql: str) -> str:
        res = self._sess.query(sql, "TSV")
        return res.bytes().decode() if res is not None else ""

    def close(self) -> None:
        self._sess.close()
        self._dir.cleanup()


class LiveEngine(Engine):
    name = "live"

    def __init__(self) -> None:
        self.version = self.execute("SELECT version() FORMAT TSV").strip()

    def execute(self, sql: str) -> str:
        req = urllib.request.Request(LIVE_URL, data=sql.encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{e.code}: {e.read().decode(errors='replace')}") from None

    def close(self) -> None:
        pass


def open_engine(kind: str) -> Engine:
    if kind == "chdb":
        pytest.importorskip("chdb", reason="chdb-core is in tests/py/requirements.txt")
        return ChdbEngine()
    try:
        urllib.request.urlopen(LIVE_URL + "ping", timeout=3).read()
    except OSError as e:
        pytest.skip(f"ClickHouse 18.16 at {LIVE_URL} does not answer ({e}); live half skipped")
    return LiveEngine()


def ddl_files() -> list[Path]:
    return sorted(p for p in DDL_DIR.iterdir() if FILE_RE.match(p.name))


def apply_migrations(engine: Engine, db: str) -> None:
    engine.execute(f"CREATE DATABASE {db}")
    for f in ddl_files():
        for stmt in split_statements(f.read_text(encoding="utf-8")):
            if engine.name == "live":
                # ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS; `zt migrate` rewrites it
                # to a plain ADD COLUMN of the missing columns, and this database is new.
                stmt = re.sub(r"ADD COLUMN IF NOT EXISTS", "ADD COLUMN", stmt)
            try:
                engine.execute(stmt.replace("{database}", db))
            except Exception as e:
                raise AssertionError(f"{engine.name}: {f.name}: {e}\n{stmt}") from e


# ---------------------------------------------------------------------------------------
# The fixture. All times UTC. Amounts in fen (CNY). Weeks start on Monday; 2024-01-01 is
# a Monday, February 2024 has 29 days.


def ms(ts: str) -> int:
    return timegm(datetime.strptime(ts, "%Y-%m-%d %H:%M").timetuple()) * 1000


# CRM: twelve customers and the channel they registered through.
CUSTOMERS = [
    ("c01", "douyin"), ("c02", "douyin"), ("c03", "douyin"), ("c04", "baidu"),
    ("c05", "baidu"), ("c06", "baidu"), ("c07", "wechat_mini"), ("c08", "wechat_mini"),
    ("c09", "douyin"), ("c10", "baidu"), ("c11", "organic"), ("c12", "organic"),
]

# ERP orders: (order, customer, paid at, subtotal, discount, total, channel, campaign).
# Each also gets an order.created row 5 minutes before it is paid.
PAID_ORDERS = [
    ("o01", "c01", "2024-01-05 10:00", 11000, 1000, 10000, "douyin", "cny_douyin"),
    ("o02", "c01", "2024-02-10 10:00", 20000, 0, 20000, "wechat_mini", ""),
    ("o03", "c02", "2024-01-06 11:00", 33000, 3000, 30000, "douyin", "cny_douyin"),
    ("o04", "c04", "2024-01-07 09:00", 8000, 0, 8000, "baidu", "spring_baidu"),
    ("o05", "c04", "2024-01-21 09:00", 13000, 1000, 12000, "baidu", "spring_baidu"),
    ("o06", "c04", "2024-03-02 09:00", 4000, 0, 4000, "wechat_mini", ""),
    ("o07", "c05", "2024-02-03 12:00", 6000, 0, 6000, "baidu", "spring_baidu"),
    ("o08", "c07", "2024-01-10 15:00", 16000, 1000, 15000, "wechat_mini", ""),
    ("o09", "c07", "2024-01-25 15:00", 15000, 0, 15000, "wechat_mini", ""),
    ("o11", "c09", "2024-02-15 10:00", 5000, 0, 5000, "douyin", "cny_douyin"),
    # No channel on the order: c11's acquisition channel falls back to the CRM's.
    ("o12", "c11", "2024-03-05 10:00", 10000, 1000, 9000, "", ""),
]
# o03 is refunded in part (5000 of 30000) on 2024-02-20; o10 (c03) is created and
# cancelled, never paid.
REFUND = ("o03", "c02", "2024-02-20 10:00", 5000)
CANCELLED = ("o10", "c03", "2024-01-08 10:00", "2024-01-08 11:00", 5000, "douyin", "cny_douyin")

# Logistics: (waybill, order, carrier, [(event type, time)], promised at).
SHIPMENTS = [
    ("W01", "o01", "sf", [("created", "2024-01-05 12:00"), ("dispatched", "2024-01-05 18:00"),
                          ("delivered", "2024-01-07 18:00")], "2024-01-08 00:00"),
    ("W03", "o03", "zto", [("created", "2024-01-06 12:00"), ("dispatched", "2024-01-06 20:00"),
                           ("exception", "2024-01-08 10:00"), ("delivered", "2024-01-10 08:00")],
     "2024-01-09 00:00"),
    ("W04", "o04", "sf", [("created", "2024-01-07 10:00"), ("dispatched", "2024-01-07 14:00"),
                          ("delivered", "2024-01-09 02:00")], "2024-01-10 00:00"),
    ("W07", "o07", "zto", [("created", "2024-02-03 13:00"), ("dispatched", "2024-02-03 18:00"),
                           ("exception", "2024-02-05 09:00"), ("returned", "2024-02-08 10:00")],
     "2024-02-06 00:00"),
    ("W08", "o08", "sf", [("created", "2024-01-10 16:00"), ("dispatched", "2024-01-11 08:00"),
                          ("delivered", "2024-01-12 08:00")], None),
]

# Service: (ticket, customer, [(event type, time, csat or None)]). opened_at_ms and
# first_response_at_ms are in the payload except where marked.
TICKETS = [
    ("T1", "c01", [("ticket.opened", "2024-01-08 10:00", None),
                   ("ticket.first_response", "2024-01-08 10:30", None),   # 30 min
                   ("ticket.resolved", "2024-01-08 11:00", None),
                   ("ticket.rated", "2024-01-08 12:00", 5)]),
    ("T2", "c02", [("ticket.opened", "2024-01-09 09:00", None),
                   ("ticket.first_response", "2024-01-09 12:00", None),   # 180 min, late
                   ("complaint.filed", "2024-01-09 13:00", None),
                   ("ticket.rated", "2024-01-09 15:00", 2)]),
    ("T3", "c04", [("ticket.opened", "2024-01-10 14:00", None),
                   ("ticket.first_response", "2024-01-10 15:00", None),   # 60 min
                   ("ticket.rated", "2024-01-10 16:00", 3),
                   ("ticket.rated", "2024-01-11 09:00", 4)]),             # re-rated: 4 wins
    ("T4", "c07", [("ticket.opened", "2024-01-12 08:00", None),
                   ("ticket.first_response", "2024-01-12 10:00", None),   # exactly 120 min
                   ("ticket.rated", "2024-01-12 11:00", 5)]),
    ("T5", "c05", [("ticket.opened", "2024-02-05 10:00", None),
                   ("ticket.first_response", "2024-02-05 10:10", None),   # 10 min, time
                   ("complaint.filed", "2024-02-05 11:00", None)]),       # from the event
    ("T6", "c09", [("ticket.opened", "2024-02-16 10:00", None)]),         # never answered
    ("T7", "c11", [("ticket.opened", "2024-03-06 09:00", None),           # opened_at from
                   ("ticket.first_response", "2024-03-06 09:20", None),   # the event; 20 min
                   ("ticket.rated", "2024-03-06 12:00", 4)]),
]
NO_FIRST_RESPONSE_FIELD = {"T5"}
NO_OPENED_FIELD = {"T7"}

# Marketing: (channel, campaign, day, spend, received at). 2024-01-06 is restated: the
# later report (20000) replaces the first (25000).
AD_SPEND = [
    ("douyin", "cny_douyin", "2024-01-05", 30000, "2024-01-06 01:00"),
    ("douyin", "cny_douyin", "2024-01-06", 25000, "2024-01-07 01:00"),
    ("douyin", "cny_douyin", "2024-01-06", 20000, "2024-01-08 01:00"),
    ("douyin", "cny_douyin", "2024-02-15", 10000, "2024-02-16 01:00"),
    ("baidu", "spring_baidu", "2024-01-07", 5000, "2024-01-08 01:00"),
    ("baidu", "spring_baidu", "2024-02-03", 3000, "2024-02-04 01:00"),
]

PV, PA, CS = "Product Viewed", "Product Added", "Checkout Started"
# Tracking: (customer or '', anonymous id, event type, name, time, channel, campaign,
# private domain, experiment assignments).
TRACKING = [
    # Funnel (17 track calls, none private).
    ("c01", "", "track", PV, "2024-01-05 09:00", "douyin", "cny_douyin", 0, []),
    ("c01", "", "track", PA, "2024-01-05 09:05", "douyin", "cny_douyin", 0, []),
    ("c01", "", "track", CS, "2024-01-05 09:10", "douyin", "cny_douyin", 0, []),
    ("c03", "", "track", PV, "2024-01-05 09:30", "douyin", "cny_douyin", 0, []),
    ("c03", "", "track", PA, "2024-01-05 09:40", "douyin", "cny_douyin", 0, []),
    ("c06", "", "track", PV, "2024-01-05 11:00", "douyin", "cny_douyin", 0, []),
    ("c02", "", "track", PV, "2024-01-06 10:00", "douyin", "cny_douyin", 0, []),
    ("c02", "", "track", PA, "2024-01-06 10:10", "douyin", "cny_douyin", 0, []),
    ("c02", "", "track", CS, "2024-01-06 10:20", "douyin", "cny_douyin", 0, []),
    ("c04", "", "track", PV, "2024-01-07 08:00", "baidu", "spring_baidu", 0, []),
    ("c04", "", "track", PA, "2024-01-07 08:10", "baidu", "spring_baidu", 0, []),
    ("c04", "", "track", CS, "2024-01-07 08:20", "baidu", "spring_baidu", 0, []),
    ("c10", "", "track", PV, "2024-01-07 08:30", "baidu", "spring_baidu", 0, []),
    ("c10", "", "track", CS, "2024-01-07 08:40", "baidu", "spring_baidu", 0, []),  # no cart
    ("c05", "", "track", PV, "2024-02-03 11:00", "baidu", "spring_baidu", 0, []),
    ("c05", "", "track", PA, "2024-02-03 11:10", "baidu", "spring_baidu", 0, []),
    ("c05", "", "track", CS, "2024-02-03 11:20", "baidu", "spring_baidu", 0, []),
    # Experiment exp_checkout on 2024-02-01 (11 track calls, 2 private).
    ("c01", "", "track", "Experiment Viewed", "2024-02-01 12:00", "", "", 0, [("exp_checkout", "control")]),
    ("c02", "", "track", "Experiment Viewed", "2024-02-01 12:01", "", "", 0, [("exp_checkout", "control")]),
    ("c03", "", "track", "Experiment Viewed", "2024-02-01 12:02", "", "", 0, [("exp_checkout", "control")]),
    ("c06", "", "track", "Experiment Viewed", "2024-02-01 12:03", "", "", 0, [("exp_checkout", "control")]),
    ("c10", "", "track", "Experiment Viewed", "2024-02-01 12:04", "", "", 0, [("exp_checkout", "control")]),
    ("", "anon-a1", "track", "Experiment Viewed", "2024-02-01 12:05", "", "", 0, [("exp_checkout", "control")]),
    ("c10", "", "track", "Experiment Viewed", "2024-02-01 12:30", "", "", 0, [("exp_checkout", "control")]),
    ("c05", "", "track", "Experiment Viewed", "2024-02-01 12:10", "", "", 0, [("exp_checkout", "treatment")]),
    ("c09", "", "track", "Experiment Viewed", "2024-02-01 12:11", "wechat_mini", "", 1, [("exp_checkout", "treatment")]),
    ("c12", "", "track", "Experiment Viewed", "2024-02-01 12:12", "wechat_mini", "", 1, [("exp_checkout", "treatment")]),
    ("", "anon-a2", "track", "Experiment Viewed", "2024-02-01 12:13", "", "", 0, [("exp_checkout", "treatment")]),
    # Pages on 2024-01-10 (6 page calls, 5 private) and one identify (not traffic).
    ("c07", "", "identify", "", "2024-01-10 09:59", "wechat_mini", "", 1, []),
    ("c07", "", "page", "Home", "2024-01-10 10:00", "wechat_mini", "", 1, []),
    ("c07", "", "page", "Sale", "2024-01-10 10:05", "wechat_mini", "", 1, []),
    ("c07", "", "page", "Item", "2024-01-10 10:10", "wechat_mini", "", 1, []),
    ("c08", "", "page", "Home", "2024-01-10 11:00", "wechat_mini", "", 1, []),
    ("c08", "", "page", "Item", "2024-01-10 11:05", "wechat_mini", "", 1, []),
    ("c12", "", "page", "Home", "2024-01-10 12:00", "organic", "", 0, []),
]


def fixture_rows(extra_paid=(), person_ids=None):
    """Rows per table. extra_paid adds PAID_ORDERS-style tuples; person_ids maps a CRM
    customer id to a resolved person_id written on its orders (identity resolution)."""
    person_ids = person_ids or {}
    rows: dict[str, list[dict]] = {t: [] for t in
                                   ("customers", "orders", "shipments", "tickets", "ad_spend", "events")}
    for cid, channel in CUSTOMERS:
        t = ms("2024-01-01 08:00")
        rows["customers"].append(dict(
            event_id=f"reg-{cid}", event_type="customer.registered", customer_id=cid,
            registered_at_ms=t, registration_channel=channel, occurred_at_ms=t,
            received_at_ms=t, event_time_ms=t))

    def order_row(eid, etype, status, oid, cid, t, sub, disc, total, channel, campaign, refund=0, exp=()):
        return dict(
            event_id=eid, event_type=etype, order_id=oid, status=status, currency="CNY",
            subtotal_minor=sub, discount_minor=disc, shipping_minor=0, total_minor=total,
            refund_minor=refund, crm_customer_id=cid, person_id=person_ids.get(cid, ""),
            channel=channel, campaign=campaign, experiment_ids=[e for e, _ in exp],
            experiment_variants=[v for _, v in exp], occurred_at_ms=t, received_at_ms=t,
            event_time_ms=t)

    for oid, cid, paid, sub, disc, total, channel, campaign in list(PAID_ORDERS) + list(extra_paid):
        t = ms(paid)
        rows["orders"].append(order_row(f"{oid}-created", "order.created", "created", oid, cid,
                                        t - 300_000, sub, disc, total, channel, campaign))
        # o11's paid event carries an assignment of another experiment: orders are not
        # exposures, so exp_other must not show up in the A/B views.
        exp = [("exp_other", "b")] if oid == "o11" else []
        rows["orders"].append(order_row(f"{oid}-paid", "order.paid", "paid", oid, cid, t, sub,
                                        disc, total, channel, campaign, exp=exp))
    oid, cid, when, amount = REFUND
    sub, disc, total, channel, campaign = 33000, 3000, 30000, "douyin", "cny_douyin"
    rows["orders"].append(order_row(f"{oid}-refund", "order.refunded", "refunded", oid, cid,
                                    ms(when), sub, disc, total, channel, campaign, refund=amount))
    oid, cid, created, cancelled, total, channel, campaign = CANCELLED
    rows["orders"].append(order_row(f"{oid}-created", "order.created", "created", oid, cid,
                                    ms(created), total, 0, total, channel, campaign))
    rows["orders"].append(order_row(f"{oid}-cancelled", "order.cancelled", "cancelled", oid, cid,
                                    ms(cancelled), total, 0, total, channel, campaign))

    for wb, oid, carrier, events, promised in SHIPMENTS:
        for status, when in events:
            t = ms(when)
            rows["shipments"].append(dict(
                event_id=f"{wb}-{status}", event_type=f"shipment.{status}", waybill_no=wb,
                order_id=oid, carrier=carrier, status=status,
                exception_code="ADDR" if status == "exception" else "",
                promised_at_ms=ms(promised) if promised else None,
                occurred_at_ms=t, received_at_ms=t, event_time_ms=t))

    for tid, cid, events in TICKETS:
        opened = ms(events[0][1])
        for etype, when, csat in events:
            t = ms(when)
            first_response = None
            if etype == "ticket.first_response" and tid not in NO_FIRST_RESPONSE_FIELD:
                first_response = t
            rows["tickets"].append(dict(
                event_id=f"{tid}-{etype}-{when}", event_type=etype, ticket_id=tid,
                status=etype.split(".")[1], service_channel="chat", category="after_sales",
                opened_at_ms=None if tid in NO_OPENED_FIELD else opened,
                first_response_at_ms=first_response, csat_score=csat,
                is_complaint=1 if etype == "complaint.filed" else 0,
                crm_customer_id=cid, occurred_at_ms=t, received_at_ms=t, event_time_ms=t))

    for i, (channel, campaign, day, spend, received) in enumerate(AD_SPEND):
        rows["ad_spend"].append(dict(
            event_id=f"ad-{i}", channel=channel, campaign_id=campaign, campaign_name=campaign,
            day=day, spend_minor=spend, currency="CNY", impressions=1000, clicks=10,
            occurred_at_ms=ms(received), received_at_ms=ms(received),
            event_time_ms=ms(received)))

    for i, (cid, anon, etype, name, when, channel, campaign, private, exp) in enumerate(TRACKING):
        t = ms(when)
        rows["events"].append(dict(
            event_id=f"trk-{i}", event_type=etype, source="tracking", crm_customer_id=cid,
            user_id=cid, anonymous_id=anon or f"dev-{cid}", channel=channel, campaign=campaign,
            private_domain=private, experiment_ids=[e for e, _ in exp],
            experiment_variants=[v for _, v in exp], event_name=name, occurred_at_ms=t,
            received_at_ms=t, event_time_ms=t))
    return rows


def sql_literal(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(sql_literal(x) for x in v) + "]"
    return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"


def insert_fixture(engine: Engine, db: str, rows: dict[str, list[dict]]) -> None:
    for table, table_rows in rows.items():
        cols = list(table_rows[0])
        values = ",\n".join("(" + ", ".join(sql_literal(r[c]) for c in cols) + ")" for r in table_rows)
        engine.execute(f"INSERT INTO {db}.{table} ({', '.join(cols)}) VALUES\n{values}")


# ---------------------------------------------------------------------------------------
# pytest fixtures


@pytest.fixture(scope="module", params=["chdb", "live"])
def engine(request):
    eng = open_engine(request.param)
    created: list[str] = []
    eng.created = created  # databases this run created, dropped at the end
    yield eng
    for db in created:
        try:
            eng.execute(f"DROP DATABASE IF EXISTS {db}")
        except Exception:
            pass
    eng.close()


def build_db(engine: Engine, **fixture_kwargs) -> str:
    db = f"zt_kpi_test_{uuid.uuid4().hex[:12]}"
    engine.created.append(db)
    apply_migrations(engine, db)
    insert_fixture(engine, db, fixture_rows(**fixture_kwargs))
    return db


class Kpi:
    def __init__(self, engine: Engine, db: str) -> None:
        self.engine, self.db = engine, db

    def rows(self, view: str, where: str = "", order: str = "") -> list[dict]:
        sql = f"SELECT * FROM {self.db}.{view}"
        if where:
            sql += f" WHERE {where}"
        if order:
            sql += f" ORDER BY {order}"
        return self.engine.rows(sql)

    def one(self, view: str, where: str = "") -> dict:
        rows = self.rows(view, where)
        assert len(rows) == 1, rows
        return rows[0]


@pytest.fixture(scope="module")
def kpi(engine) -> Kpi:
    return Kpi(engine, build_db(engine))


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-9)


def pick(row: dict, *cols: str) -> tuple:
    return tuple(row[c] for c in cols)


# ---------------------------------------------------------------------------------------
# The KPIs


def test_funnel_daily(kpi):
    # Entries (first Product Viewed per person, day, channel, campaign) and the furthest
    # ordered step each reaches within 14 days:
    #   2024-01-05 douyin/cny_douyin: c01 view,cart,checkout,paid o01,delivered W01 -> 5
    #                                 c03 view,cart -> 2;  c06 view -> 1
    #   2024-01-06 douyin/cny_douyin: c02 view,cart,checkout,paid o03,delivered W03 -> 5
    #   2024-01-07 baidu/spring_baidu: c04 ... delivered W04 -> 5;
    #                                  c10 view, checkout without cart -> 1 (ordered funnel)
    #   2024-02-03 baidu/spring_baidu: c05 view,cart,checkout,paid o07; W07 returned -> 4
    rows = kpi.rows("kpi_funnel_daily", order="day, channel, campaign")
    cols = ("day", "channel", "campaign", "viewed", "added_to_cart", "checked_out", "paid", "delivered")
    assert [pick(r, *cols) for r in rows] == [
        ("2024-01-05", "douyin", "cny_douyin", 3, 2, 1, 1, 1),
        ("2024-01-06", "douyin", "cny_douyin", 1, 1, 1, 1, 1),
        ("2024-01-07", "baidu", "spring_baidu", 2, 1, 1, 1, 1),
        ("2024-02-03", "baidu", "spring_baidu", 1, 1, 1, 1, 0),
    ]
    first = rows[0]
    assert first["view_to_cart_rate"] == approx(2 / 3)
    assert first["cart_to_checkout_rate"] == approx(1 / 2)
    assert first["checkout_to_paid_rate"] == approx(1.0)
    assert first["view_to_paid_rate"] == approx(1 / 3)
    assert rows[3]["paid_to_delivered_rate"] == approx(0.0)


def test_funnel_by_experiment_variant(kpi):
    # Exposure on 2024-02-01, then ordered steps within 14 days:
    #   control: c01 (pays o02 but never views -> stays at exposed), c02, c03, c06, c10
    #            (two exposures, one person), anon-a1 -> 6 exposed, nothing further;
    #   treatment: c05 views, adds, checks out, pays o07 (no delivery); c09 pays without
    #            viewing; c12; anon-a2 -> 4 exposed, 1 viewed/cart/checkout/paid, 0 delivered.
    rows = kpi.rows("kpi_funnel_variant", order="experiment_id, variant")
    cols = ("day", "experiment_id", "variant", "exposed", "viewed", "added_to_cart",
            "checked_out", "paid", "delivered")
    assert [pick(r, *cols) for r in rows] == [
        ("2024-02-01", "exp_checkout", "control", 6, 0, 0, 0, 0, 0),
        ("2024-02-01", "exp_checkout", "treatment", 4, 1, 1, 1, 1, 0),
    ]
    assert rows[1]["exposed_to_paid_rate"] == approx(0.25)


def test_cac_per_channel(kpi):
    # Spend (latest report per day): douyin 30000 + 20000 (restated from 25000) + 10000
    # = 60000; baidu 5000 + 3000 = 8000.
    # New customers by acquisition channel (first paid order's channel, else CRM):
    # douyin c01, c02, c09 = 3; baidu c04, c05 = 2; wechat_mini c07; organic c11 (o12
    # has no channel, c11 registered organic).
    rows = {r["channel"]: r for r in kpi.rows("kpi_cac")}
    assert set(rows) == {"douyin", "baidu", "wechat_mini", "organic"}
    assert pick(rows["douyin"], "spend_minor", "new_customers") == (60000, 3)
    assert rows["douyin"]["cac_minor"] == approx(20000.0)
    assert pick(rows["baidu"], "spend_minor", "new_customers") == (8000, 2)
    assert rows["baidu"]["cac_minor"] == approx(4000.0)
    # No spend: no CAC.
    assert pick(rows["wechat_mini"], "spend_minor", "new_customers", "cac_minor") == (0, 1, None)
    assert pick(rows["organic"], "spend_minor", "new_customers", "cac_minor") == (0, 1, None)


def test_cac_monthly(kpi):
    # January: douyin 50000 / (c01, c02) = 25000; baidu 5000 / c04 = 5000; wechat_mini c07.
    # February: douyin 10000 / c09 = 10000; baidu 3000 / c05 = 3000. March: organic c11.
    rows = kpi.rows("kpi_cac_monthly", order="month, channel")
    assert [pick(r, "month", "channel", "spend_minor", "new_customers", "cac_minor") for r in rows] == [
        ("2024-01-01", "baidu", 5000, 1, 5000.0),
        ("2024-01-01", "douyin", 50000, 2, 25000.0),
        ("2024-01-01", "wechat_mini", 0, 1, None),
        ("2024-02-01", "baidu", 3000, 1, 3000.0),
        ("2024-02-01", "douyin", 10000, 1, 10000.0),
        ("2024-03-01", "organic", 0, 1, None),
    ]


def test_customer_ltv_net_of_refunds(kpi):
    # Net value per buyer: c01 10000 + 20000 = 30000; c02 30000 - 5000 refund = 25000;
    # c04 8000 + 12000 + 4000 = 24000; c05 6000; c07 15000 + 15000 = 30000; c09 5000;
    # c11 9000. c03 (cancelled order only) is no buyer.
    rows = {r["person_key"]: r for r in kpi.rows("kpi_customer_ltv")}
    assert {k: r["net_minor"] for k, r in rows.items()} == {
        "c01": 30000, "c02": 25000, "c04": 24000, "c05": 6000, "c07": 30000, "c09": 5000, "c11": 9000,
    }
    assert pick(rows["c02"], "paid_orders", "gross_minor", "refunded_minor") == (1, 30000, 5000)
    assert rows["c11"]["acquisition_channel"] == "organic"
    assert rows["c01"]["acquisition_channel"] == "douyin"  # first order's channel, not o02's
    # Totals: 7 buyers, 11 paid orders, gross 134000, refunds 5000, net 129000,
    # average 129000 / 7 = 18428.571...
    total = kpi.one("kpi_ltv")
    assert pick(total, "currency", "customers", "paid_orders", "gross_minor", "refunded_minor",
                "net_minor") == ("CNY", 7, 11, 134000, 5000, 129000)
    assert total["avg_ltv_minor"] == approx(129000 / 7)


def test_ltv_cohort_curves(kpi):
    # Cohort = month of the first paid order; cumulative net revenue / cohort size.
    #   2024-01 (c01, c02, c04, c07): Jan 10000+30000+8000+12000+15000+15000 = 90000;
    #       Feb +20000 (o02) - 5000 (o03 refund) = 105000; Mar +4000 (o06) = 109000.
    #   2024-02 (c05, c09): Feb 6000 + 5000 = 11000; Mar nothing -> 11000.
    #   2024-03 (c11): 9000. Curves end at March, the last month with revenue.
    rows = kpi.rows("kpi_ltv_cohort", order="cohort_month, month_offset")
    cols = ("cohort_month", "month_offset", "cohort_customers", "cumulative_net_minor")
    assert [pick(r, *cols) for r in rows] == [
        ("2024-01-01", 0, 4, 90000),
        ("2024-01-01", 1, 4, 105000),
        ("2024-01-01", 2, 4, 109000),
        ("2024-02-01", 0, 2, 11000),
        ("2024-02-01", 1, 2, 11000),
        ("2024-03-01", 0, 1, 9000),
    ]
    assert [r["ltv_per_customer_minor"] for r in rows] == [
        approx(22500.0), approx(26250.0), approx(27250.0), approx(5500.0), approx(5500.0), approx(9000.0)]


def test_ltv_cac_per_acquisition_channel(kpi):
    # douyin: net 30000 + 25000 + 5000 = 60000 over 3 -> avg 20000; CAC 60000 / 3 = 20000;
    #         LTV/CAC = 1.0, below the target 3.
    # baidu: net 24000 + 6000 = 30000 over 2 -> avg 15000; CAC 8000 / 2 = 4000;
    #         LTV/CAC = 3.75, meets the target.
    # wechat_mini and organic: no spend -> no ratio.
    rows = {r["channel"]: r for r in kpi.rows("kpi_ltv_cac")}
    d, b = rows["douyin"], rows["baidu"]
    assert pick(d, "customers", "net_ltv_minor", "spend_minor") == (3, 60000, 60000)
    assert (d["avg_ltv_minor"], d["cac_minor"], d["ltv_cac_ratio"]) == (
        approx(20000.0), approx(20000.0), approx(1.0))
    assert d["meets_target"] == 0
    assert pick(b, "customers", "net_ltv_minor", "spend_minor") == (2, 30000, 8000)
    assert (b["avg_ltv_minor"], b["cac_minor"], b["ltv_cac_ratio"]) == (
        approx(15000.0), approx(4000.0), approx(3.75))
    assert b["meets_target"] == 1
    assert rows["wechat_mini"]["ltv_cac_ratio"] is None
    assert rows["organic"]["ltv_cac_ratio"] is None


def test_promotion_roi(kpi):
    # cny_douyin: o01, o03, o11: gross 10000+30000+5000 = 45000, refund 5000, net 40000;
    #   discounts 1000+3000 = 4000; ad spend 60000; cost 64000;
    #   roi = (40000 - 64000) / 64000 = -0.375; revenue per cost = 40000/64000 = 0.625.
    # spring_baidu: o04, o05, o07: net 8000+12000+6000 = 26000; discounts 1000; ad 8000;
    #   cost 9000; roi = 17000 / 9000 = 1.888...; revenue per cost = 26000/9000 = 2.888...
    # Orders without a campaign and the never-paid o10 do not count.
    rows = {r["campaign"]: r for r in kpi.rows("kpi_promotion_roi")}
    assert set(rows) == {"cny_douyin", "spring_baidu"}
    d, b = rows["cny_douyin"], rows["spring_baidu"]
    assert pick(d, "channel", "orders", "gross_revenue_minor", "refunded_minor", "net_revenue_minor",
                "discount_minor", "ad_spend_minor", "promotion_cost_minor") == (
        "douyin", 3, 45000, 5000, 40000, 4000, 60000, 64000)
    assert (d["roi"], d["revenue_per_cost"]) == (approx(-0.375), approx(0.625))
    assert pick(b, "channel", "orders", "net_revenue_minor", "discount_minor", "ad_spend_minor",
                "promotion_cost_minor") == ("baidu", 3, 26000, 1000, 8000, 9000)
    assert (b["roi"], b["revenue_per_cost"]) == (approx(17000 / 9000), approx(26000 / 9000))


def test_promotion_spend_share(kpi):
    # Jan: gross 90000, no refund, net 90000; discounts 1000+3000+1000+1000 = 6000;
    #      ad 30000 + 20000 + 5000 = 55000; spend 61000; share 61000/90000 = 0.6778.
    # Feb: gross 20000+6000+5000 = 31000; refund 5000 -> net 26000; no discount; ad 13000;
    #      share 0.5.
    # Mar: gross 4000 + 9000 = 13000; discount 1000 (o12); no ad; share 1/13 -> meets 15 %.
    rows = kpi.rows("kpi_promotion_spend_share_monthly", order="month")
    cols = ("month", "gross_revenue_minor", "refunded_minor", "net_revenue_minor",
            "discount_minor", "ad_spend_minor", "promotion_spend_minor", "meets_target")
    assert [pick(r, *cols) for r in rows] == [
        ("2024-01-01", 90000, 0, 90000, 6000, 55000, 61000, 0),
        ("2024-02-01", 31000, 5000, 26000, 0, 13000, 13000, 0),
        ("2024-03-01", 13000, 0, 13000, 1000, 0, 1000, 1),
    ]
    assert [r["promotion_spend_share"] for r in rows] == [
        approx(61000 / 90000), approx(0.5), approx(1000 / 13000)]
    assert rows[0]["discount_share"] == approx(6000 / 90000)
    # All time: net 129000, discounts 7000, ad 68000 -> 75000 / 129000 = 0.5814.
    total = kpi.one("kpi_promotion_spend_share")
    assert pick(total, "net_revenue_minor", "discount_minor", "ad_spend_minor",
                "promotion_spend_minor", "target", "meets_target") == (129000, 7000, 68000, 75000, 0.15, 0)
    assert total["promotion_spend_share"] == approx(75000 / 129000)


def test_repurchase_rate(kpi):
    # Buyers: c01 (2 orders), c02 (1), c04 (3), c05 (1), c07 (2), c09 (1), c11 (1) = 7;
    # with >= 2 paid orders: c01, c04, c07 = 3 -> 3/7 = 0.4286, below the 45 % target.
    r = kpi.one("kpi_repurchase_rate")
    assert pick(r, "buyers", "repeat_buyers", "target", "meets_target") == (7, 3, 0.45, 0)
    assert r["repurchase_rate"] == approx(3 / 7)


def test_csat(kpi):
    # Latest rating per ticket: T1 5, T2 2, T3 4 (re-rated from 3), T4 5, T7 4.
    # Average 20 / 5 = 4.0 (target 4.5 not met); ratings >= 4: 4 of 5 = 0.8.
    r = kpi.one("kpi_csat")
    assert pick(r, "rated_tickets", "score_sum", "satisfied", "meets_target") == (5, 20, 4, 0)
    assert (r["csat_avg"], r["satisfied_share"]) == (approx(4.0), approx(0.8))
    daily = kpi.rows("kpi_csat_daily", order="day")
    # T3 counts on the day of its latest rating (2024-01-11), not 2024-01-10.
    assert [pick(d, "day", "rated_tickets", "score_sum") for d in daily] == [
        ("2024-01-08", 1, 5), ("2024-01-09", 1, 2), ("2024-01-11", 1, 4),
        ("2024-01-12", 1, 5), ("2024-03-06", 1, 4)]


def test_first_response_and_sla(kpi):
    # First responses: T1 30, T2 180, T3 60, T4 120 (exactly 2 h: inside), T5 10 (time of
    # the event), T7 20 (opened from the event) minutes. T6 was never answered and opened
    # long before the newest ticket event (2024-03-06 12:00): a breach.
    # within SLA 5 of (6 responded + 1 overdue) = 5/7; mean 420/6 = 70 min;
    # median (quantileExact: the upper middle of 10,20,30,60,120,180) = 60.
    r = kpi.one("kpi_first_response")
    assert pick(r, "tickets", "responded", "within_sla", "overdue_unanswered") == (7, 6, 5, 1)
    assert r["sla_share"] == approx(5 / 7)
    assert r["avg_response_minutes"] == approx(70.0)
    assert r["median_response_minutes"] == approx(60.0)
    daily = {d["day"]: d for d in kpi.rows("kpi_first_response_daily")}
    assert pick(daily["2024-01-09"], "tickets", "responded", "within_sla") == (1, 1, 0)
    assert daily["2024-01-09"]["avg_response_minutes"] == approx(180.0)
    assert pick(daily["2024-02-16"], "tickets", "responded", "overdue_unanswered",
                "avg_response_minutes") == (1, 0, 1, None)
    assert daily["2024-01-12"]["sla_share"] == approx(1.0)


def test_complaint_rate(kpi):
    # Complaints: T2 (2024-01-09) and T5 (2024-02-05); paid orders: 11 -> 2/11.
    r = kpi.one("kpi_complaint_rate")
    assert pick(r, "complaints", "paid_orders") == (2, 11)
    assert r["complaint_rate"] == approx(2 / 11)
    daily = {d["day"]: d for d in kpi.rows("kpi_complaint_rate_daily")}
    assert pick(daily["2024-01-09"], "complaints", "paid_orders", "complaint_rate") == (1, 0, None)
    assert pick(daily["2024-01-05"], "complaints", "paid_orders") == (0, 1)


def test_private_domain_share(kpi):
    # Traffic = track/page/screen calls: 17 funnel + 11 experiment + 6 page = 34; private:
    # c09 and c12 exposures + 5 pages of c07/c08 = 7 -> 7/34. The identify call is not
    # traffic. Visitors: 13 (funnel c01 c02 c03 c04 c05 c06 c10; experiment adds anon-a1,
    # c09, c12, anon-a2; pages add c07, c08); private visitors c09, c12, c07, c08 -> 4/13.
    r = kpi.one("kpi_private_domain_share")
    assert pick(r, "events", "private_events", "visitors", "private_visitors", "meets_target") == (
        34, 7, 13, 4, 0)
    assert r["private_domain_share"] == approx(7 / 34)
    assert r["private_visitor_share"] == approx(4 / 13)
    daily = {d["day"]: d for d in kpi.rows("kpi_private_domain_daily")}
    assert pick(daily["2024-01-10"], "events", "private_events", "visitors", "private_visitors") == (
        6, 5, 3, 2)
    assert daily["2024-01-10"]["private_domain_share"] == approx(5 / 6)
    assert pick(daily["2024-02-01"], "events", "private_events", "visitors") == (11, 2, 10)


def test_weekly_retention(kpi):
    # Active weeks (Mondays) per person, from tracking calls and orders created/paid:
    #   c01 01-01, 01-29, 02-05   c02 01-01, 01-29   c03 01-01, 01-08 (o10), 01-29
    #   c04 01-01, 01-15 (o05 on Sun 01-21), 02-26 (o06)   c06 01-01, 01-29
    #   c10 01-01, 01-29   c07 01-08, 01-22   c08 01-08   c12 01-08, 01-29
    #   c05 01-29   c09 01-29, 02-12   anon-a1, anon-a2 01-29   c11 03-04
    # Cohorts: 01-01 {c01 c02 c03 c04 c06 c10} = 6; 01-08 {c07 c08 c12} = 3;
    #          01-29 {c05 c09 a1 a2} = 4; 03-04 {c11} = 1. Grid up to week 03-04.
    rows = kpi.rows("kpi_retention_weekly", order="cohort_week, week_offset")
    grid = {}
    for r in rows:
        grid.setdefault(r["cohort_week"], []).append(r["active_persons"])
    assert grid == {
        "2024-01-01": [6, 1, 1, 0, 5, 1, 0, 0, 1, 0],
        "2024-01-08": [3, 0, 1, 1, 0, 0, 0, 0, 0],
        "2024-01-29": [4, 0, 1, 0, 0, 0],
        "2024-03-04": [1],
    }
    by_key = {(r["cohort_week"], r["week_offset"]): r for r in rows}
    assert by_key[("2024-01-01", 4)]["retention_rate"] == approx(5 / 6)
    assert by_key[("2024-01-01", 4)]["week"] == "2024-01-29"
    assert by_key[("2024-01-29", 2)]["retention_rate"] == approx(1 / 4)
    assert by_key[("2024-01-08", 0)]["retention_rate"] == approx(1.0)


def test_ab_test(kpi):
    # control: 6 exposed (c01 c02 c03 c06 c10 anon-a1), converted c01 (o02 after exposure;
    #   c02 paid before exposure) -> 1/6. treatment: 4 exposed (c05 c09 c12 anon-a2),
    #   converted c05 and c09 -> 2/4.
    # uplift 1/2 - 1/6 = 1/3; relative (1/3)/(1/6) = 2.
    # unpooled se = sqrt(.5*.5/4 + (1/6)(5/6)/6) = sqrt(0.0625 + 0.0231481) = 0.2926570
    #   95 % CI = 1/3 -+ 1.959964 * 0.2926570 = [-0.2402639, 0.9069306]
    # pooled p = 3/10; se = sqrt(.3*.7*(1/4 + 1/6)) = 0.2958040; z = 1.1268723;
    #   two-sided p = erfc(z / sqrt 2) = 0.2597965, not significant.
    # SRM: N = 10, k = 2, expected 5 each: chi2 = (1 + 1) / 5 = 0.4, df 1,
    #   p = erfc(sqrt(0.2)) = 0.5270893 -> no mismatch.
    rows = {r["variant"]: r for r in kpi.rows("kpi_ab_test")}
    assert set(rows) == {"control", "treatment"}  # exp_other on an order is no exposure
    c, t = rows["control"], rows["treatment"]
    assert pick(c, "exposed", "converted", "is_control", "uplift_abs", "p_value") == (6, 1, 1, None, None)
    assert pick(t, "exposed", "converted", "is_control", "control_variant", "control_exposed",
                "control_converted") == (4, 2, 0, "control", 6, 1)
    assert t["conversion_rate"] == approx(0.5)
    assert t["control_rate"] == approx(1 / 6)
    assert t["uplift_abs"] == approx(1 / 3)
    assert t["uplift_rel"] == pytest.approx(2.0, rel=1e-9)
    assert t["ci_low"] == pytest.approx(-0.2402639, abs=1e-6)
    assert t["ci_high"] == pytest.approx(0.9069306, abs=1e-6)
    assert t["z_score"] == pytest.approx(1.1268723, abs=1e-6)
    assert t["p_value"] == pytest.approx(0.2597965, abs=1e-6)
    assert t["confidence"] == pytest.approx(1 - 0.2597965, abs=1e-6)
    assert t["significant"] == 0
    for r in (c, t):
        assert pick(r, "variants", "total_exposed", "srm_df", "srm_mismatch") == (2, 10, 1, 0)
        assert r["srm_chi2"] == pytest.approx(0.4, abs=1e-9)
        assert r["srm_p_value"] == pytest.approx(0.5270893, abs=1e-6)


# The streamed counterparts (schemas/clickhouse/0011_funnels_stream.sql): per-person rows as
# `zt process funnels` writes them, several versions per person, read under FINAL.
DELETED_VERSION = 1 << 62
T0 = ms("2024-02-01 12:00")


def insert_stream_rows(engine: Engine, db: str, table: str, rows: list[tuple]) -> None:
    # One INSERT per row: separate parts, so FINAL (not the insert) has to pick the winner;
    # merges stopped, so the superseded rows stay for the negative controls.
    engine.execute(f"SYSTEM STOP MERGES {db}.{table}")
    for r in rows:
        engine.execute(f"INSERT INTO {db}.{table} VALUES ({', '.join(sql_literal(v) for v in r)})")


def test_ab_test_stream_equals_the_batch_view(kpi):
    # The exposures of test_ab_test as experiment_progress rows (experiment_id, person_id,
    # variant, exposed_at_ms, converted, converted_at_ms, version, deleted, _topic,
    # _partition, _offset): control c01 (converted) c02 c03 c06 c10 anon-a1, treatment c05
    # and c09 (converted) c12 anon-a2. c02 first came converted at version 1, replaced by
    # version 2; c99 was exposed to treatment and converted, then merged away. Under FINAL
    # the counts are the batch view's (6/1 and 4/2), so every statistic is the same.
    rows = []
    for i, (person, variant, conv) in enumerate([
            ("c02", "control", 1), ("c99", "treatment", 1), ("c01", "control", 1),
            ("c02", "control", 0), ("c03", "control", 0), ("c06", "control", 0),
            ("c10", "control", 0), ("anon-a1", "control", 0), ("c05", "treatment", 1),
            ("c09", "treatment", 1), ("c12", "treatment", 0), ("anon-a2", "treatment", 0)]):
        version = 2 if (person == "c02" and i > 0) else 1
        rows.append(("exp_checkout", person, variant, T0, conv, T0 + 60_000 if conv else 0,
                     version, 0, "zt.funnels", 0, i))
    rows.append(("exp_checkout", "c99", "treatment", T0, 1, T0 + 60_000, DELETED_VERSION, 1,
                 "zt.funnels", 0, len(rows)))
    insert_stream_rows(kpi.engine, kpi.db, "experiment_progress", rows)
    stream = {r["variant"]: r for r in kpi.rows("kpi_ab_test_stream")}
    batch = {r["variant"]: r for r in kpi.rows("kpi_ab_test")}
    assert set(stream) == {"control", "treatment"}
    assert pick(stream["treatment"], "exposed", "converted") == (4, 2)
    assert pick(stream["control"], "exposed", "converted", "is_control") == (6, 1, 1)
    assert stream["treatment"]["p_value"] == pytest.approx(0.2597965, abs=1e-6)
    for v in stream:
        assert set(stream[v]) == set(batch[v])
        for col, want in batch[v].items():
            got = stream[v][col]
            assert got == (approx(want) if isinstance(want, float) else want), (v, col)
    # Negative control: without FINAL the superseded and merged-away rows count.
    raw = kpi.engine.rows(f"SELECT variant, count() AS n, sum(converted) AS c FROM "
                          f"{kpi.db}.experiment_progress WHERE deleted = 0 GROUP BY variant "
                          "ORDER BY variant")
    assert [pick(r, "variant", "n", "c") for r in raw] == [("control", 7, 2), ("treatment", 5, 3)]


def test_funnel_stream(kpi):
    # funnel_progress (funnel_id, person_id, level, entry_at_ms, channel, campaign, device,
    # experiment_id, variant, version, deleted, _topic, _partition, _offset):
    #   s1 level 5 (ios); s2 level 2 at version 1, then level 3 at version 2 (ios);
    #   s3 level 1 (android); s4 level 4, merged away; s5 level 0 (never entered).
    # ios on 2024-01-05, douyin/cny_douyin: entered 2 (s1, s2); step 2: 2, step 3: 2,
    # steps 4 and 5: 1 (s1). android: step 1: 1.
    t = ms("2024-01-05 09:00")
    row = lambda person, level, device, version, deleted, off: (  # noqa: E731
        "ecommerce", person, level, t if level else 0, "douyin", "cny_douyin", device,
        "", "", version, deleted, "zt.funnels", 0, off)
    insert_stream_rows(kpi.engine, kpi.db, "funnel_progress", [
        row("s1", 5, "ios", 4, 0, 0), row("s2", 2, "ios", 1, 0, 1), row("s2", 3, "ios", 2, 0, 2),
        row("s3", 1, "android", 1, 0, 3), row("s4", 4, "ios", 3, 0, 4),
        row("s4", 4, "ios", DELETED_VERSION, 1, 5), row("s5", 0, "", 1, 0, 6)])
    got = kpi.rows("kpi_funnel_stream", order="device, step")
    assert [pick(r, "funnel_id", "day", "channel", "campaign", "device", "step", "persons",
                 "entered") for r in got] == [
        ("ecommerce", "2024-01-05", "douyin", "cny_douyin", "android", 1, 1, 1),
        ("ecommerce", "2024-01-05", "douyin", "cny_douyin", "ios", 1, 2, 2),
        ("ecommerce", "2024-01-05", "douyin", "cny_douyin", "ios", 2, 2, 2),
        ("ecommerce", "2024-01-05", "douyin", "cny_douyin", "ios", 3, 2, 2),
        ("ecommerce", "2024-01-05", "douyin", "cny_douyin", "ios", 4, 1, 2),
        ("ecommerce", "2024-01-05", "douyin", "cny_douyin", "ios", 5, 1, 2)]
    assert [r["conversion_from_step1"] for r in got] == [
        approx(1.0), approx(1.0), approx(1.0), approx(1.0), approx(0.5), approx(0.5)]
    # Negative control: without FINAL, s2's level 2 row and s4 before its merge count.
    raw = kpi.engine.rows(f"SELECT count() AS n FROM {kpi.db}.funnel_progress "
                          "WHERE deleted = 0 AND level > 0")
    assert raw[0]["n"] == 5


def test_delivery_time_and_exceptions(kpi):
    # sf: W01 dispatched 01-05 18:00 -> delivered 01-07 18:00 = 48 h (promise 01-08: on
    #     time); W04 01-07 14:00 -> 01-09 02:00 = 36 h (on time); W08 01-11 08:00 ->
    #     01-12 08:00 = 24 h (no promise). avg 36 h, no exception.
    # zto: W03 01-06 20:00 -> 01-10 08:00 = 84 h, exception, late (promise 01-09);
    #     W07 exception, returned, never delivered. 2 of 2 with an exception.
    rows = {r["carrier"]: r for r in kpi.rows("kpi_delivery")}
    sf, zto = rows["sf"], rows["zto"]
    assert pick(sf, "shipments", "delivered", "with_exception", "delivered_with_promise", "on_time") == (
        3, 3, 0, 2, 2)
    assert (sf["avg_delivery_hours"], sf["exception_rate"], sf["on_time_share"]) == (
        approx(36.0), approx(0.0), approx(1.0))
    assert pick(zto, "shipments", "delivered", "with_exception", "delivered_with_promise", "on_time") == (
        2, 1, 2, 1, 0)
    assert (zto["avg_delivery_hours"], zto["exception_rate"], zto["on_time_share"]) == (
        approx(84.0), approx(1.0), approx(0.0))
    daily = kpi.rows("kpi_delivery_daily", order="day, carrier")
    assert [pick(d, "day", "carrier", "shipments", "delivered", "with_exception") for d in daily] == [
        ("2024-01-05", "sf", 1, 1, 0), ("2024-01-06", "zto", 1, 1, 1), ("2024-01-07", "sf", 1, 1, 0),
        ("2024-01-11", "sf", 1, 1, 0), ("2024-02-03", "zto", 1, 0, 1)]
    assert daily[4]["avg_delivery_hours"] is None
    # All carriers: 2 of 5 waybills had an exception = 0.4.
    assert sum(d["with_exception"] for d in daily) / sum(d["shipments"] for d in daily) == approx(0.4)


def test_rfm_segments(kpi):
    # Reference day = last paid day 2024-03-05. Recency (days), frequency, monetary:
    #   c01 24 (02-10), 2, 30000   c02 59 (01-06), 1, 25000   c04 3 (03-02), 3, 24000
    #   c05 31 (02-03), 1, 6000    c07 40 (01-25), 2, 30000   c09 19 (02-15), 1, 5000
    #   c11 0 (03-05), 1, 9000
    # Averages: recency 176/7 = 25.14, frequency 11/7 = 1.571, monetary 129000/7 = 18428.6.
    # High R (< 25.14): c01 c04 c09 c11; high F (> 1.571): c01 c04 c07;
    # high M (> 18428.6): c01 c02 c04 c07.
    rows = {r["person_key"]: r for r in kpi.rows("kpi_rfm")}
    assert {k: r["recency_days"] for k, r in rows.items()} == {
        "c01": 24, "c02": 59, "c04": 3, "c05": 31, "c07": 40, "c09": 19, "c11": 0}
    assert rows["c01"]["avg_recency_days"] == approx(176 / 7)
    assert rows["c01"]["avg_frequency"] == approx(11 / 7)
    assert rows["c01"]["avg_monetary_minor"] == approx(129000 / 7)
    assert {k: r["segment"] for k, r in rows.items()} == {
        "c01": "important_value",       # + + +
        "c02": "important_winback",     # - - +
        "c04": "important_value",       # + + +
        "c05": "general_winback",       # - - -
        "c07": "important_retention",   # - + +
        "c09": "general_development",   # + - -
        "c11": "general_development",   # + - -
    }
    assert rows["c01"]["segment_zh"] == "重要价值客户"
    segments = {r["segment"]: r["customers"] for r in kpi.rows("kpi_rfm_segments")}
    assert segments == {"important_value": 2, "important_winback": 1, "general_winback": 1,
                        "important_retention": 1, "general_development": 2}


def test_high_value_customers(kpi):
    # The important_value segment, largest net value first: c01 (30000), c04 (24000).
    rows = kpi.rows("kpi_high_value_customers")
    assert [pick(r, "person_key", "monetary_minor", "frequency", "recency_days") for r in rows] == [
        ("c01", 30000, 2, 24), ("c04", 24000, 3, 3)]


def test_scorecard(kpi):
    # The headline tiles repeat the numbers worked out above.
    rows = {(r["kpi"], r["dimension"]): r for r in kpi.rows("kpi_scorecard")}
    expected = {
        ("ltv_cac_ratio", "douyin"): (1.0, 3.0, 0),
        ("ltv_cac_ratio", "baidu"): (3.75, 3.0, 1),
        ("ltv_cac_ratio", "wechat_mini"): (None, 3.0, None),
        ("ltv_cac_ratio", "organic"): (None, 3.0, None),
        ("repurchase_rate", ""): (3 / 7, 0.45, 0),
        ("csat_avg", ""): (4.0, 4.5, 0),
        ("promotion_spend_share", "CNY"): (75000 / 129000, 0.15, 0),
        ("private_domain_share", ""): (7 / 34, 0.8, 0),
        ("first_response_sla_share", ""): (5 / 7, None, None),
        ("complaint_rate", ""): (2 / 11, None, None),
    }
    assert set(rows) == set(expected)
    for key, (value, target, met) in expected.items():
        r = rows[key]
        assert (r["value"], r["target"], r["meets_target"]) == (
            None if value is None else approx(value), None if target is None else approx(target),
            met), key
    assert rows[("promotion_spend_share", "CNY")]["direction"] == "<="


# ---------------------------------------------------------------------------------------
# Negative controls and the identity switch


def test_negative_control_one_more_order_moves_the_repurchase_rate(engine):
    # One more paid order for c02 makes c02 a repeat buyer: 4/7 instead of the 3/7 that
    # test_repurchase_rate asserts, so that assertion is able to fail.
    extra = [("o13", "c02", "2024-03-01 10:00", 1000, 0, 1000, "douyin", "")]
    k = Kpi(engine, build_db(engine, extra_paid=extra))
    r = k.one("kpi_repurchase_rate")
    assert pick(r, "buyers", "repeat_buyers") == (7, 4)
    assert r["repurchase_rate"] == approx(4 / 7)
    assert r["repurchase_rate"] != approx(3 / 7)
    # The same one row also moves LTV, complaint rate and RFM inputs.
    assert k.one("kpi_complaint_rate")["paid_orders"] == 12
    assert k.one("kpi_ltv")["net_minor"] == 130000


def test_person_id_takes_over_when_identity_resolution_fills_it(engine):
    # Identity resolution finds that c05 and c09 are one person p-0509 and writes person_id
    # on their orders. Buyers: c01 c02 c04 c07 c11 p-0509 = 6; repeat buyers c01 c04 c07
    # and p-0509 (o07 + o11) = 4 -> 4/6.
    k = Kpi(engine, build_db(engine, person_ids={"c05": "p-0509", "c09": "p-0509"}))
    r = k.one("kpi_repurchase_rate")
    assert pick(r, "buyers", "repeat_buyers") == (6, 4)
    assert r["repurchase_rate"] == approx(4 / 6)
    ltv = {x["person_key"]: x["net_minor"] for x in k.rows("kpi_customer_ltv")}
    assert ltv["p-0509"] == 11000 and "c05" not in ltv and "c09" not in ltv


# ---------------------------------------------------------------------------------------
# Consistency between the files and the documentation (engine-independent)


def kpi_view_names() -> list[str]:
    names = []
    for f in ddl_files():
        names += re.findall(r"CREATE VIEW IF NOT EXISTS \{database\}\.(kpi_\w+)", f.read_text())
    return names


def test_every_view_file_follows_the_conventions():
    files = [f for f in ddl_files() if int(f.name[:4]) >= 100]
    assert files, "no KPI view files"
    # A later file may redefine a view (migrations are immutable): it drops it first,
    # `DROP TABLE` because 18.16 has no `DROP VIEW`.
    redefined = []
    for f in files:
        dropped = set()
        for stmt in split_statements(f.read_text(encoding="utf-8")):
            body = re.sub(r"^(\s*--[^\n]*\n)*", "", stmt).lstrip()
            drop = re.match(r"DROP TABLE IF EXISTS \{database\}\.(kpi_\w+)$", body.strip())
            if drop:
                dropped.add(drop.group(1))
                continue
            assert body.startswith("CREATE VIEW IF NOT EXISTS {database}.kpi_"), (f.name, body[:80])
            name = re.match(r"CREATE VIEW IF NOT EXISTS \{database\}\.(kpi_\w+)", body).group(1)
            if name in dropped:
                redefined.append(name)
    names = kpi_view_names()
    assert len(names) - len(redefined) == len(set(names)), "a view is defined twice without a DROP"


def test_the_sql_in_bi_md_runs(kpi):
    # Every ```sql block and inline `SELECT … FROM zhongtai…` of docs/bi.md runs on this
    # engine against the fixture (user management and Grafana macros excepted).
    doc = BI_DOC.read_text(encoding="utf-8")
    queries = [q for block in re.findall(r"```sql\n(.*?)```", doc, re.S) for q in split_statements(block)]
    queries += re.findall(r"`(SELECT [^`]*FROM zhongtai[^`]*)`", doc)
    queries = [q for q in queries if "$__" not in q and not re.match(r"\s*(CREATE USER|GRANT)", q)]
    assert len(queries) >= 15, queries
    for q in queries:
        sql = q.replace("zhongtai.", kpi.db + ".")
        try:
            kpi.engine.execute(sql + ("" if "FORMAT" in sql else "\nFORMAT TSV"))
        except Exception as e:
            raise AssertionError(f"{kpi.engine.name}: docs/bi.md query fails: {e}\n{q}") from e


def test_every_view_is_documented():
    doc = BI_DOC.read_text(encoding="utf-8")
    missing = [n for n in kpi_view_names() if f"`{n}`" not in doc]
    assert not missing, f"views missing from docs/bi.md: {missing}"
