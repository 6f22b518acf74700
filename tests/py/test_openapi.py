"""docs/openapi.yaml is a valid OpenAPI 3.1 description of exactly the routes that
crates/zt-ingest/src/server.rs registers, and names exactly the rejection reasons of
crates/zt-ingest/src/error.rs.

The routes are read from the router's source with regular expressions: the `.route("…",
get|post(…))` calls and the `for kind in [...]` loop that registers the Segment calls as
`format!("/v1/{kind}")`. Negative controls: a spec with one route removed (or one added),
a spec that is not valid OpenAPI, and a reason list with one reason missing are each
detected by the same functions the real checks use.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is in tests/py/requirements.txt")
validator = pytest.importorskip(
    "openapi_spec_validator", reason="openapi-spec-validator is in tests/py/requirements.txt"
)
from openapi_spec_validator import OpenAPIV31SpecValidator, validate  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "docs" / "openapi.yaml"
SERVER = REPO / "crates" / "zt-ingest" / "src" / "server.rs"
ERRORS = REPO / "crates" / "zt-ingest" / "src" / "error.rs"

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

# `.route("/path", post(handler))`, possibly spread over lines by rustfmt.
ROUTE_RE = re.compile(r'\.route\(\s*"(?P<path>[^"]+)"\s*,\s*(?P<method>[a-z]+)\(')
# `.route(&format!("/v1/{kind}"), post(...))` inside `for kind in [...]`.
LOOP_RE = re.compile(r"for\s+(?P<var>\w+)\s+in\s+\[(?P<items>[^\]]*)\]")
FORMAT_ROUTE_RE = re.compile(
    r'\.route\(\s*&format!\(\s*"(?P<path>[^"]+)"\s*\)\s*,\s*(?P<method>[a-z]+)\('
)


def axum_to_openapi(path: str) -> str:
    """axum 0.8 writes parameters as `{name}` like OpenAPI; older `:name` is mapped too."""
    return re.sub(r":(\w+)", r"{\1}", path)


def routes_in_source(text: str) -> set[tuple[str, str]]:
    routes = set()
    for m in ROUTE_RE.finditer(text):
        if m["method"] in HTTP_METHODS:
            routes.add((m["method"].upper(), axum_to_openapi(m["path"])))
    loops = {m["var"]: re.findall(r'"([^"]+)"', m["items"]) for m in LOOP_RE.finditer(text)}
    for m in FORMAT_ROUTE_RE.finditer(text):
        template = m["path"]
        used = [v for v in loops if "{" + v + "}" in template]
        assert len(used) == 1, f"cannot expand {template!r} with the loops {sorted(loops)}"
        for value in loops[used[0]]:
            path = template.replace("{" + used[0] + "}", value)
            routes.add((m["method"].upper(), axum_to_openapi(path)))
    return routes


def routes_in_spec(spec: dict) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in spec.get("paths", {}).items()
        for method in item
        if method in HTTP_METHODS
    }


def route_differences(spec: dict, source: str) -> tuple[set, set]:
    """(routes the code has and the spec lacks, routes the spec has and the code lacks)."""
    code, documented = routes_in_source(source), routes_in_spec(spec)
    return code - documented, documented - code


def reasons_in_source(text: str) -> set[str]:
    return set(re.findall(r'Reason::\w+\s*=>\s*"([a-z_]+)"', text))


def load_spec() -> dict:
    return yaml.safe_load(SPEC.read_text(encoding="utf-8"))


def test_spec_is_valid_openapi_3_1():
    spec = load_spec()
    assert spec["openapi"].startswith("3.1.")
    validate(spec, cls=OpenAPIV31SpecValidator)


def test_validator_rejects_an_invalid_spec():
    """Negative control: the validator is live (a spec without `info` is refused)."""
    broken = copy.deepcopy(load_spec())
    del broken["info"]
    with pytest.raises(Exception):
        validate(broken, cls=OpenAPIV31SpecValidator)


def test_source_parser_finds_the_router():
    """The regexes read what the router registers; guards against reading nothing."""
    routes = routes_in_source(SERVER.read_text(encoding="utf-8"))
    assert ("POST", "/v1/sources/{source}/events") in routes
    assert ("POST", "/v1/screen") in routes, "the for-kind loop is expanded"
    assert ("GET", "/subjects/{subject}/versions/{version}") in routes
    assert len(routes) >= 12


def test_spec_routes_equal_router_routes():
    missing, extra = route_differences(load_spec(), SERVER.read_text(encoding="utf-8"))
    assert not missing, f"routes in server.rs without a path in docs/openapi.yaml: {sorted(missing)}"
    assert not extra, f"paths in docs/openapi.yaml that server.rs does not route: {sorted(extra)}"


@pytest.mark.parametrize("route", ["/v1/group", "/subjects/{subject}/versions"])
def test_a_missing_route_is_detected(route):
    """Negative control: the same comparison reports a route removed from the spec."""
    spec = copy.deepcopy(load_spec())
    del spec["paths"][route]
    missing, extra = route_differences(spec, SERVER.read_text(encoding="utf-8"))
    assert {p for _, p in missing} == {route}
    assert not extra


def test_an_undocumented_extra_route_is_detected():
    """Negative control: a route the code does not register is reported as extra."""
    spec = copy.deepcopy(load_spec())
    spec["paths"]["/v1/import"] = {"post": {"responses": {"200": {"description": "x"}}}}
    missing, extra = route_differences(spec, SERVER.read_text(encoding="utf-8"))
    assert extra == {("POST", "/v1/import")} and not missing


def test_spec_reasons_equal_error_rs():
    code = reasons_in_source(ERRORS.read_text(encoding="utf-8"))
    assert len(code) >= 11, "the parser reads error.rs"
    documented = set(load_spec()["components"]["schemas"]["Reason"]["enum"])
    assert documented == code
    # Negative control: one reason fewer is a difference.
    assert documented - {"rate_limited"} != code


def test_every_post_route_documents_the_common_statuses():
    spec = load_spec()
    for path, item in spec["paths"].items():
        op = item.get("post")
        if op is None:
            continue
        statuses = set(op["responses"])
        for status in ["200", "400", "401", "403", "413", "429", "500", "503"]:
            assert status in statuses, f"POST {path} lacks {status}"
        assert "Retry-After" in str(op["responses"]["429"]) or "RateLimited" in str(
            op["responses"]["429"]
        )
