"""Every Avro schema stays BACKWARD_TRANSITIVE compatible with all its committed versions.

The Rust catalogue decodes a message written with any past version of a schema by
resolving it against the current one (crates/zt-model/src/catalogue.rs), so the current
file, as reader, must be able to read data written with every version ever committed, as
writer. Checking only against the previous version (BACKWARD) is not enough: two
individually compatible steps can still combine into an incompatible pair.

Compatibility is decided by the reference implementation's checker (the `avro` package,
avro.compatibility.ReaderWriterCompatibilityChecker), not by rules re-implemented here.
The negative controls run the same helper as the real check, so they prove the real check
is able to fail.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import avro.schema
import pytest
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityResult,
    SchemaCompatibilityType,
    SchemaIncompatibilityType,
)

from golden import EVENT_SCHEMA, REPO, schema_paths

# ---- the check -----------------------------------------------------------------------


def compatibility(reader_text: str, writer_text: str) -> SchemaCompatibilityResult:
    """Can data written with `writer_text` be read with `reader_text`?"""
    reader = avro.schema.parse(reader_text)
    writer = avro.schema.parse(writer_text)
    return ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)


def incompatible_versions(reader_text: str, versions: list[tuple[str, str]]) -> list[str]:
    """One line per (label, writer text) in `versions` that `reader_text` cannot read;
    empty when the reader is compatible with all of them (BACKWARD_TRANSITIVE)."""
    failures = []
    for label, writer_text in versions:
        result = compatibility(reader_text, writer_text)
        if result.compatibility is not SchemaCompatibilityType.compatible:
            details = "; ".join(sorted(result.messages)) or "no message"
            where = ", ".join(sorted(result.locations))
            failures.append(
                f"{label}: {result.compatibility.value} "
                f"({', '.join(i.value for i in result.incompatibilities)}) "
                f"at {where}: {details}"
            )
    return failures


# ---- git history ---------------------------------------------------------------------


class HistoryUnavailable(Exception):
    """The git history needed for the transitive check is missing; the reason says why."""


def _git(*args: str, cwd: Path = REPO) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, encoding="utf-8"
    )
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc.stdout


def committed_versions(path: Path) -> list[tuple[str, str]]:
    """(label, text) of every committed version of `path`, newest first.

    Raises HistoryUnavailable when git cannot give the full history: no git binary, not a
    work tree (e.g. a source tarball), or a shallow clone (older versions are missing, so
    a pass would be meaningless).
    """
    if shutil.which("git") is None:
        raise HistoryUnavailable("git is not installed")
    try:
        top = Path(_git("rev-parse", "--show-toplevel").strip())
        shallow = _git("rev-parse", "--is-shallow-repository").strip() == "true"
    except subprocess.CalledProcessError as e:
        raise HistoryUnavailable(
            f"{REPO} is not a usable git work tree: {e.stderr.strip()}"
        ) from e
    if shallow:
        raise HistoryUnavailable(
            "shallow clone: older schema versions are not available "
            "(run `git fetch --unshallow` to check compatibility with them)"
        )
    rel = path.resolve().relative_to(top.resolve()).as_posix()
    # Only commits that leave a version of the file behind (not deletions). The filter
    # names what to include: the exclusion form `--diff-filter=d` also drops the root
    # commit (git 2.47), which silently hid the first version of every schema.
    shas = _git("log", "--format=%H", "--diff-filter=ACMRT", "--", rel).split()
    return [(f"{rel}@{sha[:12]}", _git("show", f"{sha}:{rel}")) for sha in shas]


def committed_versions_or_skip(path: Path) -> list[tuple[str, str]]:
    try:
        return committed_versions(path)
    except HistoryUnavailable as e:
        pytest.skip(f"schema history not checked: {e}")


# ---- every schema file ---------------------------------------------------------------


def test_there_are_schemas():
    # Guards the parametrized tests below against silently running zero times.
    assert any(p.name == "event.avsc" for p in schema_paths())


def test_schema_parses_as_record(schema_path: Path):
    schema = avro.schema.parse(schema_path.read_text(encoding="utf-8"))
    assert isinstance(schema, avro.schema.RecordSchema), (
        f"{schema_path.name}: the catalogue only accepts a record at the top level"
    )
    assert schema.type == "record"


def test_backward_transitive_with_git_history(schema_path: Path):
    versions = committed_versions_or_skip(schema_path)
    # No committed version (a new file) leaves nothing to be compatible with.
    reader_text = schema_path.read_text(encoding="utf-8")
    failures = incompatible_versions(reader_text, versions)
    assert not failures, (
        f"{schema_path.name} (working tree) cannot read data written with:\n  "
        + "\n  ".join(failures)
    )


def test_history_lookup_finds_committed_versions():
    # event.avsc has been committed since the first commit; finding no version of it
    # would mean the lookup is broken and the transitive check compares nothing.
    versions = committed_versions_or_skip(EVENT_SCHEMA)
    assert versions
    for _, text in versions:
        assert avro.schema.parse(text).fullname == "zt.Event"


# ---- negative controls: the check above can fail --------------------------------------


@pytest.fixture()
def event_text() -> str:
    return EVENT_SCHEMA.read_text(encoding="utf-8")


def _with_new_field(text: str, field: dict) -> str:
    schema = json.loads(text)
    schema["fields"].append(field)
    return json.dumps(schema)


def test_control_new_field_without_default_is_incompatible(event_text: str):
    reader = _with_new_field(event_text, {"name": "loyalty_note", "type": "string"})
    failures = incompatible_versions(reader, [("current event.avsc", event_text)])
    assert len(failures) == 1, "a field the old data lacks, with no default, must be rejected"
    result = compatibility(reader, event_text)
    assert result.compatibility is SchemaCompatibilityType.incompatible
    assert SchemaIncompatibilityType.reader_field_missing_default_value in (
        result.incompatibilities
    )


def test_control_new_field_with_default_is_compatible(event_text: str):
    reader = _with_new_field(
        event_text, {"name": "loyalty_note", "type": "string", "default": ""}
    )
    assert incompatible_versions(reader, [("current event.avsc", event_text)]) == []


def test_control_long_to_string_is_incompatible(event_text: str):
    schema = json.loads(event_text)
    changed = copy.deepcopy(schema)
    (field,) = [f for f in changed["fields"] if f["name"] == "occurred_at"]
    assert field["type"]["type"] == "long", "control expects occurred_at to be a long"
    field["type"] = "string"
    reader = json.dumps(changed)
    failures = incompatible_versions(reader, [("current event.avsc", event_text)])
    assert len(failures) == 1, "a long read as a string must be rejected"
    assert SchemaIncompatibilityType.type_mismatch in (
        compatibility(reader, event_text).incompatibilities
    )


def test_control_transitive_catches_an_old_incompatible_version(event_text: str):
    # The newest version is fine but an older one is not: the check must look at all.
    old = json.loads(event_text)
    (field,) = [f for f in old["fields"] if f["name"] == "occurred_at"]
    field["type"] = "string"
    versions = [("v2", event_text), ("v1", json.dumps(old))]
    failures = incompatible_versions(event_text, versions)
    assert [f.split(":")[0] for f in failures] == ["v1"]
