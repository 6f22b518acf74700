"""Golden bytes of the Confluent wire format, produced independently of the Rust crate.

    python golden.py write   # re-encode the fixture, overwrite order_paid.hex and order_paid.v1.hex
    python golden.py check   # exit 1 if either committed hex is stale

The Rust side (crates/zt-model/tests/golden.rs) builds the same event by hand and must
produce exactly these bytes. The two implementations share nothing but the schema file
and the Avro specification, so agreement means both follow the spec (or both misread it
the same way, which the decode checks on each side make unlikely).

order_paid.v1.hex is the same event written with the superseded schema
schemas/avro/history/event.v1.avsc (no `person_id`), as the records already on the topics
were written: both sides must read it with the current schema as reader (Avro schema
resolution), `person_id` taking its default null.

Wire format: magic byte 0x00, schema id as a 4-byte big-endian unsigned int, Avro binary
body. The schema id is defined in crates/zt-model/src/catalogue.rs: the low 31 bits of the
CRC-64-AVRO (Rabin) fingerprint of the schema's Parsing Canonical Form.

Fixture conventions (crates/zt-model/tests/golden/order_paid.json): the JSON is the
datum fastavro's schemaless_writer takes, except for the one union of records
(`payload`), whose branch is stored as a single-key object {"<full name>": {...}} in the
style of Avro's JSON encoding. fastavro would otherwise pick the branch by guessing from
the fields, so the branch is made explicit as its tuple notation ("zt.OrderPayload", {...})
before encoding. Timestamps are int milliseconds, which fastavro passes through unchanged
for timestamp-millis; ["null", "string"] unions are plain values or null, which is
unambiguous.
"""

from __future__ import annotations

import io
import json
import struct
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import avro.schema
import fastavro

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO / "schemas" / "avro"
EVENT_SCHEMA = SCHEMA_DIR / "event.avsc"
# The version of event.avsc before `person_id` was added.
EVENT_SCHEMA_V1 = SCHEMA_DIR / "history" / "event.v1.avsc"
GOLDEN_DIR = REPO / "crates" / "zt-model" / "tests" / "golden"
FIXTURE = GOLDEN_DIR / "order_paid.json"
GOLDEN_HEX = GOLDEN_DIR / "order_paid.hex"
GOLDEN_V1_HEX = GOLDEN_DIR / "order_paid.v1.hex"

# Fields of the fixture that event.v1.avsc does not have.
V1_ABSENT = ("person_id",)

MAGIC = 0
HEADER_LEN = 5

# Fields whose value is a union of records: written as fastavro's (name, record) tuple.
RECORD_UNIONS = ("payload",)


def schema_paths() -> list[Path]:
    """Every schema the Rust catalogue embeds (see crates/zt-model/build.rs): current
    versions directly under schemas/avro/, superseded ones under schemas/avro/history/."""
    return sorted(SCHEMA_DIR.glob("*.avsc")) + sorted((SCHEMA_DIR / "history").glob("*.avsc"))


# ---- schema id -----------------------------------------------------------------------

# CRC-64-AVRO as the Avro specification ("Schema Fingerprints") defines it: the
# fingerprint of the empty string and the table built from it. The spec works on a Java
# signed long with >>> (logical shift); Python ints are unbounded and non-negative here,
# so >> on a value below 2**64 is already the logical shift and no masking is needed.
EMPTY64 = 0xC15D213AA4D7A795


def _fp_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY64 & -(fp & 1))
        table.append(fp)
    return table


_FP_TABLE = _fp_table()


def rabin64(data: bytes) -> int:
    """CRC-64-AVRO fingerprint of `data` as an unsigned 64-bit integer."""
    fp = EMPTY64
    for b in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ b) & 0xFF]
    return fp


def canonical_form(schema_text: str) -> str:
    """Parsing Canonical Form as the `avro` package computes it.

    This is the form the Rust catalogue hashes, and it is NOT the same string Java's
    SchemaNormalization or fastavro produce for this repository's schemas: for a primitive
    with a logical type, e.g. {"type": "long", "logicalType": "timestamp-millis"}, `avro`
    and apache-avro 0.21 (Rust) strip the logicalType but keep the object, giving
    {"type":"long"}, while Java and fastavro collapse it to "long". The spec lists
    [PRIMITIVES] before [STRIP], which reads like the former; the Java reference does the
    latter. The ids are ours, so only agreement with the Rust side matters here, but an id
    computed by a Java tool would differ. test_wire_golden.py pins down that this is the
    only difference.
    """
    return avro.schema.parse(schema_text).canonical_form


def schema_id(schema_text: str) -> int:
    """The catalogue id: low 31 bits of the Rabin fingerprint of the canonical form."""
    return rabin64(canonical_form(schema_text).encode("utf-8")) & 0x7FFFFFFF


# ---- encoding ------------------------------------------------------------------------


def load_schema(path: Path = EVENT_SCHEMA) -> tuple[str, dict]:
    """The schema's text (for the id) and its fastavro-parsed form (for encoding)."""
    text = path.read_text(encoding="utf-8")
    return text, fastavro.parse_schema(json.loads(text))


def load_fixture(path: Path = FIXTURE) -> dict:
    """The fixture as stored: union-of-records branches as {"<full name>": {...}}."""
    return json.loads(path.read_text(encoding="utf-8"))


def to_datum(fixture: dict) -> dict:
    """The fixture as fastavro's writer wants it: record-union branches as tuples."""
    datum = dict(fixture)
    for field in RECORD_UNIONS:
        ((branch, value),) = fixture[field].items()
        datum[field] = (branch, value)
    return datum


def frame(schema_id_: int, body: bytes) -> bytes:
    return struct.pack(">BI", MAGIC, schema_id_) + body


def unframe(message: bytes) -> tuple[int, bytes]:
    magic, sid = struct.unpack(">BI", message[:HEADER_LEN])
    if magic != MAGIC:
        raise ValueError(f"magic byte is {magic:#x}, not 0")
    return sid, message[HEADER_LEN:]


def as_v1(fixture: dict) -> dict:
    """The fixture as a writer with event.v1.avsc had it: without the fields v1 lacks."""
    return {k: v for k, v in fixture.items() if k not in V1_ABSENT}


def encode(fixture: dict, schema_path: Path = EVENT_SCHEMA) -> bytes:
    """The framed message for `fixture` (in stored form)."""
    text, parsed = load_schema(schema_path)
    missing = [f["name"] for f in json.loads(text)["fields"] if f["name"] not in fixture]
    if missing:
        # fastavro would quietly write a default for a missing top-level field.
        raise ValueError(f"fixture lacks fields of {schema_path.name}: {missing}")
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, to_datum(fixture))
    return frame(schema_id(text), buf.getvalue())


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _from_reader(value):
    """Maps what fastavro's reader returns back to the fixture's stored form.

    The reader turns timestamp-millis into datetimes and, with return_record_name, a
    union of records into a (name, record) tuple; the fixture has int milliseconds and
    {"<name>": record}.
    """
    if isinstance(value, datetime):
        return (value - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, tuple):
        name, inner = value
        return {name: _from_reader(inner)}
    if isinstance(value, dict):
        return {k: _from_reader(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_reader(v) for v in value]
    return value


def decode(
    message: bytes, schema_path: Path = EVENT_SCHEMA, reader_path: Path | None = None
) -> tuple[int, dict]:
    """Schema id and datum (in the fixture's stored form) of a framed message written with
    `schema_path`, resolved against `reader_path` when given (Avro schema resolution)."""
    sid, body = unframe(message)
    _, parsed = load_schema(schema_path)
    reader = load_schema(reader_path)[1] if reader_path is not None else None
    fo = io.BytesIO(body)
    datum = fastavro.schemaless_reader(fo, parsed, reader, return_record_name=True)
    if fo.read():
        raise ValueError("trailing bytes after the Avro body")
    return sid, _from_reader(datum)


def read_golden_hex(path: Path = GOLDEN_HEX) -> bytes:
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


def goldens() -> list[tuple[Path, bytes]]:
    """(hex file, the message it must hold) for every golden file."""
    fixture = load_fixture()
    return [
        (GOLDEN_HEX, encode(fixture)),
        (GOLDEN_V1_HEX, encode(as_v1(fixture), EVENT_SCHEMA_V1)),
    ]


def main(argv: list[str]) -> int:
    if argv[1:] == ["write"]:
        for path, message in goldens():
            path.write_text(message.hex() + "\n", encoding="ascii")
            print(f"wrote {len(message)} bytes to {path.relative_to(REPO)}")
        return 0
    if argv[1:] == ["check"]:
        stale = [path for path, message in goldens() if message != read_golden_hex(path)]
        for path in stale:
            print(f"{path.relative_to(REPO)} is stale: run python golden.py write")
        if stale:
            return 1
        print("golden hex is up to date")
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
