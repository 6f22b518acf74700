"""Golden bytes of the Confluent wire format and the schema ids, checked from Python.

The committed crates/zt-model/tests/golden/order_paid.hex is what fastavro makes of the
fixture order_paid.json; crates/zt-model/tests/golden.rs checks that the Rust encoder
makes the same bytes from a hand-written struct. order_paid.v1.hex is the same event
written with the superseded schema history/event.v1.avsc, which both sides must read with
the current schema. See golden.py for the conventions.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import fastavro.schema
import pytest

import golden

# ---- CRC-64-AVRO and the schema id ---------------------------------------------------

# Apache Avro's cross-language vectors (share/test/data/schema-tests.txt): canonical form
# and fingerprint, published as a Java signed long.
SPEC_VECTORS = [
    ('"null"', 7195948357588979594),
    ('"boolean"', -6970731678124411036),
    ('"int"', 8247732601305521295),
    ('"long"', -3434872931120570953),
    ('{"name":"foo","type":"fixed","size":15}', 1756455273707447556),
    (
        '{"name":"PigValue","type":"record","fields":'
        '[{"name":"value","type":["null","int","long","PigValue"]}]}',
        -1759257747318642341,
    ),
]


@pytest.mark.parametrize("canonical, java_long", SPEC_VECTORS, ids=[v[0][:24] for v in SPEC_VECTORS])
def test_rabin_matches_avro_test_vectors(canonical: str, java_long: int):
    assert golden.rabin64(canonical.encode()) == java_long % 2**64


def fastavro_rabin(canonical: str) -> int:
    # fastavro.schema.fingerprint(..., "CRC-64-AVRO") returns the 64-bit fingerprint as 16
    # hex digits of its LITTLE-endian byte representation (least significant byte first,
    # as Java's and Rust's apache-avro byte[] fingerprints), not the number written in
    # hex: for "null" (0x63dd24e7cc258f8a) it returns "8a8f25cce724dd63".
    return int.from_bytes(bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")), "little")


def test_fastavro_fingerprint_hex_is_little_endian():
    assert fastavro.schema.fingerprint('"null"', "CRC-64-AVRO") == "8a8f25cce724dd63"
    assert golden.rabin64(b'"null"') == 0x63DD24E7CC258F8A
    assert fastavro_rabin('"null"') == golden.rabin64(b'"null"')


def test_rabin_matches_fastavro(schema_path: Path):
    canonical = golden.canonical_form(schema_path.read_text(encoding="utf-8"))
    assert golden.rabin64(canonical.encode("utf-8")) == fastavro_rabin(canonical)


def test_canonical_form_differs_from_javas_only_for_logical_types(schema_path: Path):
    # `avro` (and the Rust crate) keep {"type":"long"} where the logical type was;
    # fastavro (like Java) writes "long". See golden.canonical_form. Anything else
    # differing would mean the id is not over the Parsing Canonical Form at all.
    text = schema_path.read_text(encoding="utf-8")
    ours = golden.canonical_form(text)
    java_like = fastavro.schema.to_parsing_canonical_form(
        fastavro.schema.parse_schema(json.loads(text))
    )
    collapsed = ours
    for prim in ("int", "long", "string", "bytes", "float", "double", "boolean", "null"):
        collapsed = collapsed.replace('{"type":"%s"}' % prim, '"%s"' % prim)
    assert collapsed == java_like


def test_schema_id(schema_path: Path):
    sid = golden.schema_id(schema_path.read_text(encoding="utf-8"))
    assert 0 <= sid < 2**31
    if schema_path == golden.EVENT_SCHEMA:
        # The id the Rust encoder wrote into the golden header (golden.rs asserts the
        # header is its catalogue id).
        header_id = int.from_bytes(golden.read_golden_hex()[1:5], "big")
        assert sid == header_id


def test_schema_ids_are_unique():
    # The catalogue refuses a 31-bit collision between different schemas.
    ids = {}
    for path in golden.schema_paths():
        text = path.read_text(encoding="utf-8")
        ids.setdefault(golden.schema_id(text), set()).add(golden.canonical_form(text))
    assert all(len(forms) == 1 for forms in ids.values())


# ---- golden bytes --------------------------------------------------------------------


@pytest.fixture(scope="module")
def message() -> bytes:
    return golden.read_golden_hex()


def test_golden_hex_is_one_lowercase_line():
    text = golden.GOLDEN_HEX.read_text(encoding="ascii")
    assert text.endswith("\n") and text.count("\n") == 1
    assert text.strip() == text.strip().lower()


def test_encoding_the_fixture_gives_the_golden_bytes(message: bytes):
    assert golden.encode(golden.load_fixture()) == message, (
        "order_paid.hex is stale or the encoding changed: "
        "run `python tests/py/golden.py write` and review the diff"
    )


def test_header(message: bytes):
    assert message[0] == 0x00
    assert int.from_bytes(message[1:5], "big") == golden.schema_id(
        golden.EVENT_SCHEMA.read_text(encoding="utf-8")
    )


def test_decoding_the_golden_bytes_gives_the_fixture(message: bytes):
    sid, datum = golden.decode(message)
    assert sid == int.from_bytes(message[1:5], "big")
    assert datum == golden.load_fixture()


def _zigzag_varint(buf: bytes, pos: int) -> tuple[int, int]:
    # Avro spec, "Binary Encoding": int and long are zig-zag coded variable-length ints.
    shift = raw = 0
    while True:
        b = buf[pos]
        pos += 1
        raw |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return (raw >> 1) ^ -(raw & 1), pos


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    # A string is its byte length as a long, then that many bytes of UTF-8.
    n, pos = _zigzag_varint(buf, pos)
    return buf[pos : pos + n].decode("utf-8"), pos + n


def test_envelope_prefix_read_by_hand_from_the_spec(message: bytes):
    # A third reading, independent of both fastavro and apache-avro, of the fields before
    # the first record: strings, a ["null","string"] union (index 1 = string), longs.
    fixture = golden.load_fixture()
    body, pos = message[golden.HEADER_LEN :], 0
    for name in ("event_id", "event_type", "source"):
        value, pos = _string(body, pos)
        assert value == fixture[name], name
    branch, pos = _zigzag_varint(body, pos)
    assert branch == 1
    value, pos = _string(body, pos)
    assert value == fixture["source_event_id"]
    value, pos = _zigzag_varint(body, pos)
    assert value == fixture["occurred_at"]
    branch, pos = _zigzag_varint(body, pos)
    assert branch == 1
    for name in ("sent_at", "received_at", "event_time"):
        value, pos = _zigzag_varint(body, pos)
        assert value == fixture[name], name


def test_control_changing_an_amount_changes_the_bytes(message: bytes):
    changed = copy.deepcopy(golden.load_fixture())
    order = changed["payload"]["zt.OrderPayload"]
    order["lines"][0]["unit_price_minor"] += 1
    encoded = golden.encode(changed)
    assert encoded != message
    assert encoded[: golden.HEADER_LEN] == message[: golden.HEADER_LEN]
    assert golden.decode(encoded)[1] == changed


def test_person_id_is_the_last_field_read_by_hand(message: bytes):
    # person_id was appended to zt.Event: the body ends with its ["null","string"] union,
    # branch 1 (a string), then the string. Read from the spec, as above.
    person_id = golden.load_fixture()["person_id"]
    assert person_id
    tail = person_id.encode("utf-8")
    assert message.endswith(tail)
    start = len(message) - len(tail) - 2
    branch, pos = _zigzag_varint(message, start)
    assert branch == 1
    assert _string(message, pos) == (person_id, len(message))


# ---- the previous version: event.v1.avsc, without person_id --------------------------


@pytest.fixture(scope="module")
def message_v1() -> bytes:
    return golden.read_golden_hex(golden.GOLDEN_V1_HEX)


def test_v1_golden_is_the_fixture_written_with_the_v1_schema(message_v1: bytes):
    assert golden.GOLDEN_V1_HEX.read_text(encoding="ascii").count("\n") == 1
    assert golden.encode(golden.as_v1(golden.load_fixture()), golden.EVENT_SCHEMA_V1) == (
        message_v1
    ), "order_paid.v1.hex is stale: run `python tests/py/golden.py write`"


def test_v1_header_is_the_v1_id_not_the_current_one(message_v1: bytes, message: bytes):
    v1_id = golden.schema_id(golden.EVENT_SCHEMA_V1.read_text(encoding="utf-8"))
    assert int.from_bytes(message_v1[1:5], "big") == v1_id
    assert v1_id != int.from_bytes(message[1:5], "big")
    # The id every record written before person_id carries (docs/wire-format.md).
    assert v1_id == 925107643


def test_v1_bytes_read_with_the_current_schema_give_person_id_null(message_v1: bytes):
    _, datum = golden.decode(message_v1, golden.EVENT_SCHEMA_V1, golden.EVENT_SCHEMA)
    want = golden.load_fixture()
    want["person_id"] = None
    assert datum == want


def test_control_v1_bytes_do_not_read_as_the_current_schema(message_v1: bytes):
    # Without resolution the v1 body is one field short: the current schema alone must
    # not accept it, or the resolution test above would prove nothing.
    with pytest.raises(Exception):
        golden.decode(message_v1, golden.EVENT_SCHEMA)


def test_check_script_works_from_any_directory(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, str(Path(golden.__file__).resolve()), "check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
