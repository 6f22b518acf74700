"""Offline checks of the deployment artefacts: the Helm chart (deploy/helm/zhongtai), the
Grafana dashboard and the Prometheus alerts (deploy/grafana).

- `helm lint` and rendering with the Helm 4 library (PyPI helm-python-sdk), with the
  required values only and with ci/ci-values.yaml;
- every rendered manifest against the Kubernetes 1.32 OpenAPI schemas
  (kubernetes-validate, strict: unknown fields are errors);
- labels, probes and security context of the rendered objects;
- the ConfigMap's TOML: parsed with tomllib and accepted by the real `zt config check`;
- values.schema.json rejecting bad values, with jsonschema and with Helm itself;
- yamllint on the values and the rules;
- every metric name the dashboard and the alerts use appears as a series in a live
  /metrics scrape of `zt ingest`, `zt sink` and `zt process identity|profiles|funnels`
  against the local stack, and every scrape is clean under `promtool check metrics`;
  `promtool check rules` on the alerts and on the dashboard's queries.

Each checking helper has a negative control, so a check that cannot fail is noticed.
The binary is target/debug/zt (built with `cargo build -p zt-cli` when absent; ZT_BIN
overrides); the live part needs the local stack (Kafka on 127.0.0.1:9092, ClickHouse on
http://127.0.0.1:8123; ZT_TEST_KAFKA / ZT_TEST_CLICKHOUSE override).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from yamllint import linter as yamllint_linter
from yamllint.config import YamlLintConfig

import helm_python as helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "zhongtai"
CI_VALUES = CHART / "ci" / "ci-values.yaml"
SCHEMA = CHART / "values.schema.json"
DASHBOARD = REPO / "deploy" / "grafana" / "zhongtai-dashboard.json"
RULES = REPO / "deploy" / "grafana" / "prometheus-rules.yaml"
YAMLLINT_CONFIG = REPO / "deploy" / ".yamllint"
DEFAULTS_TOML = REPO / "config" / "defaults.toml"

KUBE_VERSION = "1.32.0"
RELEASE = "zt-check"
NAMESPACE = "data"
SALT = "test-salt-0123456789abcdef"

# The values without a usable default: what `helm install` needs at the least.
REQUIRED_VALUES = {
    "kafka": {"bootstrapServers": "kafka-0.kafka:9092,kafka-1.kafka:9092"},
    "clickhouse": {"url": "http://clickhouse:8123"},
    "secrets": {"piiSalt": SALT},
}
VALUE_SETS = ["default", "ci"]
# Kinds that are CustomResourceDefinitions: no schema in kubernetes-validate.
CRD_KINDS = {"ServiceMonitor"}
# The processors `zt process` has, each a Deployment of the chart.
PROCESSORS = ("identity", "profiles", "funnels")
RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
)


# --- rendering ------------------------------------------------------------------------------


def values_for(kind: str) -> dict:
    if kind == "default":
        return copy.deepcopy(REQUIRED_VALUES)
    if kind == "ci":
        return yaml.safe_load(CI_VALUES.read_text())
    raise ValueError(kind)


@pytest.fixture(scope="session")
def chart():
    with helm.Chart.load(CHART) as c:
        yield c


def render(chart, values: dict) -> list[dict]:
    """Renders like `helm install` and returns the manifests, each with `_template`."""
    out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for template, text in sorted(out.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["_template"] = template
                docs.append(doc)
    return docs


@pytest.fixture(scope="session", params=VALUE_SETS)
def rendered(request, chart):
    return request.param, render(chart, values_for(request.param))


def manifests(docs: list[dict]) -> list[dict]:
    """The documents without the `_template` bookkeeping key."""
    return [{k: v for k, v in d.items() if k != "_template"} for d in docs]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def component(doc: dict) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    """(name, pod template) of every workload."""
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"])
        for d in docs
        if d["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet")
    ]


def config_toml(docs: list[dict], name: str | None = None) -> str:
    name = name or f"{RELEASE}-zhongtai"
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == name]
    return cm["data"]["zhongtai.toml"]


# --- lint and render --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", VALUE_SETS)
def test_helm_lint_is_clean(kind):
    report = helm.lint(CHART, values_for(kind), strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == [], report
    # Severity 1 is informational ("icon is recommended"); warnings and errors fail.
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_helm_lint_fails_without_required_values():
    # Negative control of the lint check: the defaults alone lack bootstrap, URL and salt.
    report = helm.lint(CHART, {}, strict=True)
    text = json.dumps(report)
    assert report["errors"] or any(m["severity"] >= 3 for m in report["messages"]), report
    for key in ("bootstrapServers", "clickhouse/url", "secrets"):
        assert key in text, f"lint report does not name {key}: {text}"


def test_rendered_objects(rendered):
    kind, docs = rendered
    names = sorted(
        (d["kind"], "-" if d["kind"] == "ServiceAccount" else component(d)) for d in docs
    )
    expected = [
        ("ConfigMap", "config"),
        ("ConfigMap", "hooks"),
        ("Deployment", "ingest"),
        ("Deployment", "sink"),
        ("HorizontalPodAutoscaler", "ingest"),
        ("Job", "migrate"),
        ("Job", "topics"),
        ("PodDisruptionBudget", "ingest"),
        ("Service", "ingest"),
        ("Service", "metrics"),
        ("ServiceAccount", "-"),
    ]
    if kind == "default":
        expected += [("Secret", "config"), ("Secret", "hooks")]
    else:
        # existingSecret: the chart creates no Secret; a ServiceMonitor is on; the identity,
        # profiles and funnels processors are on.
        expected += [
            ("ServiceMonitor", "metrics"),
            ("Deployment", "identity"),
            ("Deployment", "profiles"),
            ("Deployment", "funnels"),
        ]
    assert names == sorted(expected)
    # `zt process ...` runs only in the processors' Deployments, each its own subcommand.
    for d in by_kind(docs, "Deployment"):
        (c,) = d["spec"]["template"]["spec"]["containers"]
        if component(d) in PROCESSORS:
            assert c["args"][-2:] == ["process", component(d)]
        else:
            assert "process" not in c["args"], d["metadata"]["name"]


def test_migrations_and_topics_run_as_pre_install_and_pre_upgrade_hooks(rendered):
    _, docs = rendered
    jobs = {component(j): j for j in by_kind(docs, "Job")}
    assert jobs["migrate"]["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "migrate"
    assert jobs["topics"]["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == [
        "topics",
        "create",
    ]
    for job in jobs.values():
        ann = job["metadata"]["annotations"]
        assert ann["helm.sh/hook"] == "pre-install,pre-upgrade"
        # A hook cannot use the release's own ConfigMap: it does not exist yet on install.
        volumes = job["spec"]["template"]["spec"]["volumes"]
        (cfg,) = [v for v in volumes if v["name"] == "config"]
        hooks_cm = [d for d in by_kind(docs, "ConfigMap") if component(d) == "hooks"][0]
        assert cfg["configMap"]["name"] == hooks_cm["metadata"]["name"]
        assert int(hooks_cm["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
            ann["helm.sh/hook-weight"]
        )
    # Topics before migrations, and the hook config is the release's config.
    assert int(jobs["topics"]["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        jobs["migrate"]["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert config_toml(docs, f"{RELEASE}-zhongtai-hooks") == config_toml(docs)


# --- Kubernetes schemas -----------------------------------------------------------------------


def kube_validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_every_manifest_validates_against_kubernetes_1_32(rendered):
    _, docs = rendered
    checked = 0
    for doc in manifests(docs):
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kube_validate(doc)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")
        checked += 1
    assert checked >= 10


def test_kubernetes_validation_catches_a_misspelt_field(rendered):
    # Negative control: strict mode refuses an unknown field (a probe name typo).
    _, docs = rendered
    deploy = copy.deepcopy(manifests(by_kind(docs, "Deployment"))[0])
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbes"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kube_validate(deploy)


def test_service_monitor_selects_the_metrics_service(chart):
    docs = render(chart, values_for("ci"))
    (sm,) = by_kind(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (svc,) = [s for s in by_kind(docs, "Service") if component(s) == "metrics"]
    labels = svc["metadata"]["labels"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port_names = {p["name"] for p in svc["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in port_names
        assert ep["path"] == "/metrics"
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]


# --- labels, probes, security context ------------------------------------------------------------


def label_problems(doc: dict, app_version: str) -> list[str]:
    labels = doc["metadata"].get("labels", {})
    want = {
        "app.kubernetes.io/name": "zhongtai",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/version": app_version,
        "app.kubernetes.io/managed-by": "Helm",
    }
    return [f"{k}={labels.get(k)!r}, want {v!r}" for k, v in want.items() if labels.get(k) != v]


def test_recommended_labels_everywhere(rendered, chart):
    _, docs = rendered
    app_version = chart.metadata["appVersion"]
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert label_problems(doc, app_version) == [], where
        if doc["kind"] != "ServiceAccount":
            assert doc["metadata"]["labels"]["app.kubernetes.io/component"], where
    for name, pod in pod_specs(docs):
        assert label_problems(pod, app_version) == [], name
    # Negative control of the helper.
    broken = copy.deepcopy(by_kind(docs, "Deployment")[0])
    del broken["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    assert label_problems(broken, app_version)


def test_selectors_match_their_pods(rendered):
    _, docs = rendered
    deployments = {component(d): d for d in by_kind(docs, "Deployment")}
    for name, d in deployments.items():
        sel = d["spec"]["selector"]["matchLabels"]
        assert sel["app.kubernetes.io/component"] == name
        assert sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ingest_pods = deployments["ingest"]["spec"]["template"]["metadata"]["labels"]
    sink_pods = deployments["sink"]["spec"]["template"]["metadata"]["labels"]
    services = {component(s): s for s in by_kind(docs, "Service")}
    assert services["ingest"]["spec"]["selector"].items() <= ingest_pods.items()
    assert not services["ingest"]["spec"]["selector"].items() <= sink_pods.items()
    # The metrics Service reaches every long-running component, processors included.
    for d in deployments.values():
        pods = d["spec"]["template"]["metadata"]["labels"]
        assert services["metrics"]["spec"]["selector"].items() <= pods.items()
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= ingest_pods.items()
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployments["ingest"]["metadata"]["name"]
    # The HPA owns the replica count.
    assert "replicas" not in deployments["ingest"]["spec"]


def test_probes_hit_the_admin_port_the_binary_listens_on(rendered):
    _, docs = rendered
    admin_port = int(tomllib.loads(config_toml(docs))["admin"]["listen"].rsplit(":", 1)[1])
    for d in by_kind(docs, "Deployment"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert ports["admin"] == admin_port
            for probe, path in (
                ("startupProbe", "/livez"),
                ("livenessProbe", "/livez"),
                ("readinessProbe", "/readyz"),
            ):
                get = c[probe]["httpGet"]
                assert (get["path"], get["port"]) == (path, "admin"), (d["metadata"]["name"], probe)
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    ingest = [d for d in by_kind(docs, "Deployment") if component(d) == "ingest"][0]
    (container,) = ingest["spec"]["template"]["spec"]["containers"]
    ingest_port = int(tomllib.loads(config_toml(docs))["ingest"]["listen"].rsplit(":", 1)[1])
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["http"] == ingest_port


def security_problems(name: str, pod: dict) -> list[str]:
    """What keeps a pod template from the restricted Pod Security Standard, and more."""
    spec = pod["spec"]
    psc = spec.get("securityContext") or {}
    problems = []
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: automountServiceAccountToken is not false")
    for c in spec.get("initContainers", []) + spec["containers"]:
        csc = c.get("securityContext") or {}
        where = f"{name}/{c['name']}"

        def eff(key, csc=csc):
            return csc.get(key, psc.get(key))

        if eff("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot is not true")
        if eff("runAsUser") in (None, 0):
            problems.append(f"{where}: runAsUser is unset or root")
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem is not true")
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if csc.get("privileged"):
            problems.append(f"{where}: privileged")
        if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if (csc.get("capabilities") or {}).get("add"):
            problems.append(f"{where}: capabilities added")
        if (eff("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile is not RuntimeDefault")
    return problems


def test_every_pod_is_non_root_read_only_and_unprivileged(rendered):
    kind, docs = rendered
    pods = pod_specs(docs)
    # ingest, sink, migrate, topics; ci adds the identity, profiles and funnels processors.
    assert len(pods) == (4 if kind == "default" else 7)
    for name, pod in pods:
        assert security_problems(name, pod) == []


def test_security_check_catches_a_pod_without_run_as_non_root(rendered):
    # Negative control: the same helper, on a manifest without runAsNonRoot.
    _, docs = rendered
    name, pod = copy.deepcopy(pod_specs(docs)[0])
    pod["spec"]["securityContext"].pop("runAsNonRoot")
    for c in pod["spec"]["containers"]:
        c["securityContext"].pop("runAsNonRoot")
    assert any("runAsNonRoot" in p for p in security_problems(name, pod))


def test_config_change_rolls_the_pods(chart):
    def checksums(values):
        docs = render(chart, values)
        return {
            component(d): d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for d in by_kind(docs, "Deployment")
        }

    base = values_for("default")
    changed = values_for("default")
    changed["config"] = {"log": {"level": "debug"}}
    assert checksums(base) == checksums(values_for("default"))  # deterministic
    a, b = checksums(base), checksums(changed)
    assert set(a) == {"ingest", "sink"}
    assert all(a[k] != b[k] for k in a)


# --- template guards ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sink": {"replicas": 13}}, "exceeds the topics' partitions (12)"),
        (
            {"processors": {"identity": {"enabled": True, "replicas": 13}}},
            "processors.identity.replicas (13) exceeds the partitions of its input topics (12)",
        ),
        (
            {"processors": {"profiles": {"enabled": True, "replicas": 13}}},
            "processors.profiles.replicas (13) exceeds the partitions of zt.events.resolved (12)",
        ),
        (
            {
                "processors": {"profiles": {"enabled": True}},
                "config": {"topics": {"partition_overrides": {"zt.profiles.state": 24}}},
            },
            "zt.events.resolved=12, zt.identity.merges=12, zt.profiles.transfers=12, "
            "zt.profiles=12, zt.profiles.state=24",
        ),
        (
            {"processors": {"funnels": {"enabled": True, "replicas": 13}}},
            "processors.funnels.replicas (13) exceeds the partitions of zt.events.resolved (12)",
        ),
        (
            {
                "processors": {"funnels": {"enabled": True}},
                "config": {"topics": {"partition_overrides": {"zt.funnels.transfers": 6}}},
            },
            "`zt process funnels` needs its co-partitioned topics to have one partition count, "
            "but config.topics gives zt.events.resolved=12, zt.identity.merges=12, "
            "zt.funnels.transfers=6, zt.funnels.state=12",
        ),
        (
            {
                "processors": {"funnels": {"enabled": True}},
                "config": {"topics": {"partition_overrides": {"zt.identity.merges": 24}}},
            },
            "zt.identity.merges=24, zt.funnels.transfers=12",
        ),
        ({"config": {"pii": {"salt": "x" * 20}}}, "config.pii.salt is set by the chart"),
        ({"config": {"clickhouse": {"password": "p"}}}, "config.clickhouse.password is set by"),
        ({"config": {"kafka": {"bootstrap_servers": "a:1"}}}, "use kafka.bootstrapServers"),
    ],
)
def test_render_refuses(chart, change, message):
    values = values_for("default")
    for k, v in change.items():
        values.setdefault(k, {}).update(v)
    with pytest.raises(helm.HelmError) as e:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(e.value)


def test_processor_guard_matches_the_binary(zt_bin):
    # The chart deploys exactly the processors `zt process` has: when a processor is added
    # to (or removed from) the binary, this fails; render (or drop) its Deployment in
    # templates/processors.yaml and update PROCESSORS.
    r = subprocess.run(
        [str(zt_bin), "process", "--help"], capture_output=True, text=True, env=clean_env(), timeout=30
    )
    assert r.returncode == 0, r.stderr
    commands = set(re.findall(r"^  ([a-z][a-z-]*)  ", r.stdout.split("Commands:", 1)[1], re.M))
    assert commands - {"help"} == set(PROCESSORS), r.stdout
    for name in PROCESSORS:
        r = subprocess.run(
            [str(zt_bin), "process", name, "--help"],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=30,
        )
        assert r.returncode == 0 and "--config" in r.stdout, (name, r.stderr)
    # Negative control: a processor the binary lacks is refused, as the chart's args would be.
    r = subprocess.run(
        [str(zt_bin), "process", "sessions"], capture_output=True, text=True, env=clean_env(), timeout=30
    )
    assert r.returncode != 0 and "unrecognized subcommand" in r.stderr, r.stderr


def processor_values(**processors) -> dict:
    values = values_for("default")
    values["processors"] = {name: {"enabled": True, **p} for name, p in processors.items()}
    return values


def test_processors_render_as_consumer_group_deployments(chart):
    docs = render(
        chart,
        processor_values(identity={"replicas": 12}, profiles={"replicas": 12}, funnels={"replicas": 12}),
    )
    deployments = {component(d): d for d in by_kind(docs, "Deployment")}
    assert set(deployments) == {"ingest", "sink", *PROCESSORS}
    sink = deployments["sink"]
    sink_pod = sink["spec"]["template"]["spec"]
    for name in PROCESSORS:
        d = deployments[name]
        assert d["metadata"]["name"] == f"{RELEASE}-zhongtai-{name}"
        assert d["spec"]["replicas"] == 12  # = config.topics.partitions: allowed
        # Rolled one by one like the sink: a surge member could be left without partitions.
        assert d["spec"]["strategy"] == sink["spec"]["strategy"]
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert c["name"] == name
        assert c["args"] == ["--config", "/etc/zhongtai/zhongtai.toml", "process", name]
        # The release's ConfigMap, mounted where --config points.
        assert pod["volumes"] == sink_pod["volumes"]
        (cfg,) = [v for v in pod["volumes"] if v["name"] == "config"]
        assert cfg["configMap"]["name"] == f"{RELEASE}-zhongtai"
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["config"]["mountPath"] == "/etc/zhongtai" and mounts["config"]["readOnly"]
        assert [p["name"] for p in c["ports"]] == ["admin"]
        for probe, path in (
            ("startupProbe", "/livez"),
            ("livenessProbe", "/livez"),
            ("readinessProbe", "/readyz"),
        ):
            assert (c[probe]["httpGet"]["path"], c[probe]["httpGet"]["port"]) == (path, "admin")
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
        # None reads the PII salt nor ClickHouse: no secret reaches them.
        assert "ZT__PII__SALT" not in json.dumps(c) and "ZT__CLICKHOUSE" not in json.dumps(c)
        assert pod["terminationGracePeriodSeconds"] == 60
        ann = d["spec"]["template"]["metadata"]["annotations"]
        assert ann["checksum/config"] == sink["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]
        assert security_problems(name, d["spec"]["template"]) == []
        kube_validate(manifests([d])[0])
    # No PodDisruptionBudget for them (the sink has none either).
    assert [component(p) for p in by_kind(docs, "PodDisruptionBudget")] == ["ingest"]
    # Off by default.
    defaults = render(chart, values_for("default"))
    assert not {component(d) for d in by_kind(defaults, "Deployment")} & set(PROCESSORS)


def test_processor_replicas_are_bounded_by_their_own_inputs(chart):
    # identity splits the source topics' partitions: a larger source topic raises its
    # bound; profiles and funnels are bounded by zt.events.resolved alone.
    overrides = {"zt.events.tracking": 24}
    values = processor_values(
        identity={"replicas": 24}, profiles={"replicas": 4}, funnels={"replicas": 4}
    )
    values["config"] = {"topics": {"partitions": 4, "partition_overrides": overrides}}
    docs = render(chart, values)
    replicas = {component(d): d["spec"].get("replicas") for d in by_kind(docs, "Deployment")}
    assert (replicas["identity"], replicas["profiles"], replicas["funnels"]) == (24, 4, 4)
    for name in ("profiles", "funnels"):
        bad = copy.deepcopy(values)
        bad["processors"][name]["replicas"] = 5
        with pytest.raises(helm.HelmError) as e:
            chart.render(bad, name=RELEASE, namespace=NAMESPACE)
        assert (
            f"processors.{name}.replicas (5) exceeds the partitions of zt.events.resolved (4)"
            in str(e.value)
        )
    # Explicit identity inputs: only their partitions count.
    values = processor_values(identity={"replicas": 5})
    values["config"] = {
        "topics": {"partitions": 4, "partition_overrides": overrides},
        "identity": {"topics": ["zt.events.crm", "zt.events.erp"]},
    }
    with pytest.raises(helm.HelmError) as e:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert "processors.identity.replicas (5) exceeds the partitions of its input topics (4)" in str(
        e.value
    )
    # Co-partitioned topics raised together: allowed, and the bound follows.
    values = processor_values(profiles={"replicas": 8})
    values["config"] = {
        "topics": {
            "partitions": 4,
            "partition_overrides": {
                t: 8
                for t in (
                    "zt.events.resolved",
                    "zt.identity.merges",
                    "zt.profiles.transfers",
                    "zt.profiles",
                    "zt.profiles.state",
                )
            },
        }
    }
    (profiles,) = [d for d in by_kind(render(chart, values), "Deployment") if component(d) == "profiles"]
    assert profiles["spec"]["replicas"] == 8
    # The same for funnels: its four topics raised together, the profiles topics untouched
    # (profiles is off, so they do not constrain it).
    values = processor_values(funnels={"replicas": 8})
    values["config"] = {
        "topics": {
            "partitions": 4,
            "partition_overrides": {
                t: 8
                for t in (
                    "zt.events.resolved",
                    "zt.identity.merges",
                    "zt.funnels.transfers",
                    "zt.funnels.state",
                )
            },
        }
    }
    (funnels,) = [d for d in by_kind(render(chart, values), "Deployment") if component(d) == "funnels"]
    assert funnels["spec"]["replicas"] == 8
    # With profiles on as well, its topics left at 4 are refused.
    values["processors"]["profiles"] = {"enabled": True, "replicas": 1}
    with pytest.raises(helm.HelmError) as e:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert "zt.events.resolved=8, zt.identity.merges=8, zt.profiles.transfers=4" in str(e.value)
    # An output version (docs/operations.md, "Backfill") names the topics the guard checks:
    # version 2's own topics, not version 1's.
    values = processor_values(profiles={"replicas": 8})
    values["config"] = {
        "topics": {
            "partitions": 4,
            "profiles_version": 2,
            "partition_overrides": {
                t: 8
                for t in (
                    "zt.events.resolved",
                    "zt.identity.merges",
                    "zt.profiles.transfers.v2",
                    "zt.profiles.v2",
                    "zt.profiles.state.v2",
                )
            },
        }
    }
    (profiles,) = [d for d in by_kind(render(chart, values), "Deployment") if component(d) == "profiles"]
    assert profiles["spec"]["replicas"] == 8
    del values["config"]["topics"]["partition_overrides"]["zt.profiles.state.v2"]
    with pytest.raises(helm.HelmError) as e:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert "zt.profiles.v2=8, zt.profiles.state.v2=4" in str(e.value)


def test_sink_replicas_may_reach_the_largest_partition_override(chart):
    values = values_for("default")
    values["config"] = {"topics": {"partitions": 4, "partition_overrides": {"zt.events.erp": 8}}}
    values["sink"] = {"replicas": 8}
    docs = render(chart, values)
    sink = [d for d in by_kind(docs, "Deployment") if component(d) == "sink"][0]
    assert sink["spec"]["replicas"] == 8


# --- the configuration file ---------------------------------------------------------------------


def toml_key_paths(table: dict, prefix=()) -> set[tuple]:
    out = set()
    for k, v in table.items():
        out.add(prefix + (k,))
        if isinstance(v, dict):
            out |= toml_key_paths(v, prefix + (k,))
    return out


# Tables whose keys are names chosen by the user, not configuration keys.
FREE_TABLES = {("ingest", "sources"), ("kafka", "options"), ("topics", "partition_overrides")}


def unknown_keys(paths: set[tuple], known: set[tuple]) -> list[tuple]:
    def free(p):
        return any(p[: len(f)] == f and len(p) > len(f) for f in FREE_TABLES)

    return sorted(p for p in paths if p not in known and not free(p))


@pytest.fixture(scope="session")
def zt_bin() -> Path:
    """target/debug/zt, built when absent (make test builds it; ZT_BIN overrides)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    path = Path(os.environ.get("ZT_BIN") or target / "debug" / "zt")
    if not path.exists():
        cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
        subprocess.run(
            [cargo, "build", "--locked", "-p", "zt-cli"], cwd=REPO, check=True, timeout=3600
        )
    assert path.exists(), f"{path} missing after cargo build -p zt-cli"
    return path


def clean_env(**extra: str) -> dict:
    """The environment without any ZT_* variable of the caller, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZT_") and k != "RUST_LOG"}
    env["RUST_LOG"] = "warn"
    env.update(extra)
    return env


def zt_config_check(zt_bin: Path, toml_text: str, tmp_path: Path, **env: str):
    path = tmp_path / f"zhongtai-{uuid.uuid4().hex[:6]}.toml"
    path.write_text(toml_text)
    return subprocess.run(
        [str(zt_bin), "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(**env),
    )


def test_configmap_is_the_toml_the_binary_reads(rendered, zt_bin, tmp_path):
    kind, docs = rendered
    values = values_for(kind)
    text = config_toml(docs)
    cfg = tomllib.loads(text)
    assert cfg["kafka"]["bootstrap_servers"] == values["kafka"]["bootstrapServers"]
    assert cfg["clickhouse"]["url"] == values["clickhouse"]["url"]
    assert "salt" not in cfg.get("pii", {}) and "password" not in cfg["clickhouse"]
    # Only keys config/defaults.toml knows (the binary refuses others; this names them).
    known = toml_key_paths(tomllib.loads(DEFAULTS_TOML.read_text()))
    assert unknown_keys(toml_key_paths(cfg), known) == []

    # The real binary, with the salt as the pod gets it (ZT__PII__SALT from the Secret).
    r = zt_config_check(zt_bin, text, tmp_path, ZT__PII__SALT=SALT)
    assert r.returncode == 0, r.stderr
    assert "configuration ok" in r.stderr
    assert "local-development default" not in r.stderr
    effective = tomllib.loads(r.stdout)
    assert effective["kafka"]["bootstrap_servers"] == values["kafka"]["bootstrapServers"]
    assert effective["pii"]["salt"] == "<redacted>"
    if kind == "ci":
        # Dotted keys, inline tables and nested tables survive the YAML -> TOML rendering.
        assert effective["topics"]["partition_overrides"] == {"zt.events.tracking": 24}
        assert effective["kafka"]["options"] == {"socket.keepalive.enable": "true"}
        erp = effective["ingest"]["sources"]["erp"]
        assert [k["id"] for k in erp["write_keys"]] == ["erp-prod", "erp-next"]
        assert erp["mapping"]["renames"] == {"order_no": "order_id", "cust_no": "customer_id"}
        assert effective["sink"]["batch_max_bytes"] == 67108864  # not 6.7108864e+07
        assert effective["clickhouse"]["cluster"] == "prod"
        # The processors' sections reach the binary too.
        assert effective["identity"]["max_per_person"]["anonymous_id"] == 100
        assert effective["profiles"]["rfm"]["high_score"] == 4
        # An array of tables (funnel definitions, with their steps) as well.
        funnels = effective["funnels"]
        assert funnels["allowed_lateness_ms"] == 7200000
        assert [f["id"] for f in funnels["definitions"]] == ["signup", "purchase"]
        assert funnels["definitions"][0]["window_ms"] == 86400000
        assert funnels["definitions"][1]["steps"][1] == {
            "name": "paid",
            "event_type": "order.paid",
            "track_name": "",
        }


def test_zt_config_check_refuses_an_unknown_key(zt_bin, tmp_path, chart):
    # Negative control: the same check on the rendered TOML with one misspelt key.
    values = values_for("default")
    values["config"] = {"sink": {"batch_max_rowz": 5}}
    text = config_toml(render(chart, values))
    known = toml_key_paths(tomllib.loads(DEFAULTS_TOML.read_text()))
    assert unknown_keys(toml_key_paths(tomllib.loads(text)), known) == [("sink", "batch_max_rowz")]
    r = zt_config_check(zt_bin, text, tmp_path, ZT__PII__SALT=SALT)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "batch_max_rowz" in r.stderr


# --- values.schema.json -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def schema() -> dict:
    s = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(s)
    return s


def schema_errors(chart, schema: dict, values: dict) -> list[str]:
    merged = chart.merge_values(values)
    return sorted(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(merged)
    )


@pytest.mark.parametrize("kind", VALUE_SETS)
def test_schema_accepts_the_good_values(chart, schema, kind):
    assert schema_errors(chart, schema, values_for(kind)) == []
    chart.validate_schema(values_for(kind))


def _with(path: str, value):
    values = values_for("default")
    node = values
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return values


_DELETE = object()


def _funnel(**change) -> dict:
    """config.funnels with one funnel definition, `change` applied to it."""
    funnel = {"id": "f", "window_ms": 1000, "steps": [{"name": "a", "event_type": "track"}]}
    return {"definitions": [{**funnel, **change}]}


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        ("kafka.bootstrapServers", _DELETE, "kafka/bootstrapServers"),  # back to the empty default
        ("kafka.bootstrapServers", "kafka-without-port", "kafka/bootstrapServers"),
        ("clickhouse.url", "clickhouse:8123", "clickhouse/url"),
        ("secrets.piiSalt", _DELETE, "secrets"),  # no salt and no existing Secret
        ("secrets.piiSalt", "short", "secrets/piiSalt"),
        ("sink.replicas", -1, "sink/replicas"),
        ("processors.identity", {"enabled": True, "replicas": -1}, "processors/identity/replicas"),
        ("processors.profiles", {"enabled": True, "replica": 2}, "processors/profiles"),
        ("config.identity", {"priority": ["phone"]}, "config/identity/priority/0"),
        ("config.identity", {"max_per_person": {"phone_hash": 0}}, "config/identity/max_per_person"),
        ("config.profiles", {"rfm": {"high_score": 6}}, "config/profiles/rfm/high_score"),
        ("config.profiles", {"rfm": {"frequency": [2, 3]}}, "config/profiles/rfm/frequency"),
        ("processors.funnels", {"enabled": True, "replicas": -1}, "processors/funnels/replicas"),
        ("processors.funnels", {"enabled": "yes", "replicas": 1}, "processors/funnels/enabled"),
        ("config.funnels", {"allowed_lateness_ms": -1}, "config/funnels/allowed_lateness_ms"),
        ("config.funnels", {"definitions": {"id": "x"}}, "config/funnels/definitions"),
        ("config.funnels", _funnel(window_ms=0), "config/funnels/definitions/0/window_ms"),
        ("config.funnels", _funnel(id="bad id"), "config/funnels/definitions/0/id"),
        ("config.funnels", _funnel(steps=[]), "config/funnels/definitions/0/steps"),
        ("config.funnels", _funnel(steps=[{"name": "a"}]), "config/funnels/definitions/0/steps/0"),
        (
            "config.funnels",
            _funnel(steps=[{"name": "a", "event_type": "track", "trackname": "A"}]),
            "config/funnels/definitions/0/steps/0",
        ),
        ("ingest.replicas", -3, "ingest/replicas"),
        ("ingest.autoscaling", {"minReplicas": 0}, "ingest/autoscaling/minReplicas"),
        ("image.pullPolicy", "Sometimes", "image/pullPolicy"),
        ("config.log", {"format": "xml"}, "config/log/format"),
        ("config.kafka", {"producer": {"compression": "br"}}, "config/kafka/producer/compression"),
        ("config.topics", {"partitions": 0}, "config/topics/partitions"),
        (
            "config.ingest",
            {"sources": {"erp": {"write_keys": [{"id": "k", "sha256": "the-clear-key"}]}}},
            "config/ingest/sources/erp/write_keys/0/sha256",
        ),
        ("config.ingest", {"sources": {"shop": {}}}, "config/ingest/sources"),
        ("config.sinks", {}, "config"),  # unknown section
        ("ingest.replica", 3, "ingest"),  # misspelt chart value
    ],
)
def test_schema_rejects_bad_values(chart, schema, path, value, where):
    values = _with(path, value)
    errors = schema_errors(chart, schema, values)
    assert any(e.startswith(where) for e in errors), errors
    # Helm applies the same schema before rendering.
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)


def schema_config_paths(node: dict, prefix=()) -> set[tuple]:
    out = set()
    for k, v in (node.get("properties") or {}).items():
        out.add(prefix + (k,))
        if prefix + (k,) not in FREE_TABLES:
            out |= schema_config_paths(v, prefix + (k,))
    return out


def test_schema_config_keys_are_keys_of_the_binary(schema):
    # The schema types config keys; a key the binary does not know would be a lie.
    known = toml_key_paths(tomllib.loads(DEFAULTS_TOML.read_text()))
    known |= {("ingest", "sources"), ("topics", "partition_overrides"), ("kafka", "options")}
    paths = schema_config_paths(schema["properties"]["config"])
    # Per-source keys (ingest.sources.<source>.*) are checked by the binary's SourceConfig.
    paths = {p for p in paths if p[:2] != ("ingest", "sources") or len(p) == 2}
    assert len(paths) > 30
    assert sorted(paths - known) == []


def value_paths(node, prefix=()) -> set[tuple]:
    """Every key path of a values tree (maps are descended; lists and {} are leaves)."""
    out = set()
    for k, v in node.items():
        out.add(prefix + (k,))
        if isinstance(v, dict):
            out |= value_paths(v, prefix + (k,))
    return out


def test_chart_readme_documents_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", (CHART / "README.md").read_text(), re.M)
    documented = {tuple(r.split(".")) for r in rows}
    paths = value_paths(values)
    assert sorted(documented - paths) == [], "README rows that are not values"
    leaves = {p for p in paths if not any(q[: len(p)] == p and q != p for q in paths)}
    undocumented = [p for p in leaves if not any(p[: len(d)] == d for d in documented)]
    assert sorted(undocumented) == [], "values missing from the README table"


# --- yamllint ----------------------------------------------------------------------------------


def yamllint_problems(text: str, path: Path) -> list[str]:
    conf = YamlLintConfig(file=str(YAMLLINT_CONFIG))
    return [
        f"{path.name}:{p.line}:{p.column} {p.level} {p.desc} ({p.rule})"
        for p in yamllint_linter.run(text, conf, str(path))
    ]


@pytest.mark.parametrize(
    "path",
    [CHART / "values.yaml", CI_VALUES, CHART / "Chart.yaml", RULES, YAMLLINT_CONFIG],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_yamllint(path):
    assert yamllint_problems(path.read_text(), path) == []


def test_yamllint_catches_a_duplicate_key():
    problems = yamllint_problems("sink:\n  replicas: 2\n  replicas: 3\n", CHART / "values.yaml")
    assert any("duplicat" in p for p in problems), problems


# --- metric names: dashboard and alerts against a live scrape ----------------------------------

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers outside strings, label
    matchers, ranges and grouping clauses that are not functions, keywords or numbers."""
    m = re.fullmatch(r"\s*label_values\(\s*(.*?)\s*(?:,\s*\w+\s*)?\)\s*", expr, re.S)
    if m:  # Grafana's template query
        expr = m.group(1)
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for tok in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        word = tok.group(0)
        before = s[tok.start() - 1] if tok.start() else " "
        if before.isdigit() or before == ".":
            continue  # 1e3, 10m
        if s[tok.end():].lstrip().startswith("("):
            continue  # a function
        if word.lower() in PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def dashboard_exprs(dashboard: dict) -> list[str]:
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dashboard["panels"])
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var["query"]
            exprs.append(q["query"] if isinstance(q, dict) else q)
    return exprs


def rules_exprs(rules: dict) -> list[str]:
    return [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]


def exported_series_names(scrape: str) -> set[str]:
    """Names of the series in a text exposition, plus the base name of every histogram
    or summary that has series (its _bucket/_sum/_count)."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", scrape, re.M))
    names = set()
    for line in scrape.splitlines():
        if line and not line.startswith("#"):
            name = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group(0)
            names.add(name)
            for suffix in ("_bucket", "_sum", "_count"):
                base = name[: -len(suffix)]
                if name.endswith(suffix) and types.get(base) in ("histogram", "summary"):
                    names.add(base)
    return names


def missing_metrics(exprs: list[str], exported: set[str]) -> dict[str, set[str]]:
    """expr -> the metric names it uses that no scrape exported."""
    out = {}
    for e in exprs:
        missing = promql_metric_names(e) - exported
        if missing:
            out[e] = missing
    return out


def test_promql_metric_name_extraction():
    expr = (
        'histogram_quantile(0.99, sum by (le, table) (rate(zt_sink_insert_duration_seconds_bucket'
        '{namespace=~"$namespace", table!="events"}[$__rate_interval]))) > 1e3 '
        'and on (namespace) zt_build_info offset 10m unless absent(up{job="x"})'
    )
    assert promql_metric_names(expr) == {
        "zt_sink_insert_duration_seconds_bucket",
        "zt_build_info",
        "up",
    }
    assert promql_metric_names("label_values(zt_build_info, namespace)") == {"zt_build_info"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(what: str, check, timeout: float, logs=lambda: ""):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except OSError as e:
            last = e
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})\n{logs()}")


class Proc:
    """A `zt` subprocess with its own log file."""

    def __init__(self, name: str, zt_bin: Path, args: list[str], env: dict, tmp: Path):
        self.name = name
        self.log = tmp / f"{name}.log"
        self._f = open(self.log, "wb")
        self.p = subprocess.Popen(
            [str(zt_bin), *args], env=env, stdout=self._f, stderr=subprocess.STDOUT
        )

    def tail(self) -> str:
        return f"--- {self.name} log:\n" + self.log.read_text(errors="replace")[-3000:]

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._f.close()


MARKETING_KEY = "helm-check-marketing-key"
TRACKING_KEY = "helm-check-tracking-key"


def marketing_events() -> bytes:
    base = {
        "type": "ad_spend.reported",
        "occurred_at": "2026-06-19T02:00:00+08:00",
        "channel": "douyin",
        "campaign_id": "DY-618",
        "spend": 1234567,
        "impressions": 880000,
        "clicks": 15400,
    }
    ok = dict(base, event_id=f"helm-{uuid.uuid4().hex}", day="2026-06-18")
    # Accepted by ingest, but outside ClickHouse's Date range: the sink dead-letters it.
    unmappable = dict(base, event_id=f"helm-{uuid.uuid4().hex}", day="2200-01-01")
    # Rejected by ingest (missing spend): a dead letter at the edge.
    rejected = {k: v for k, v in base.items() if k != "spend"}
    return json.dumps([ok, unmappable, rejected]).encode()


def tracking_batch(run: str) -> bytes:
    """A Segment batch that makes every labelled processor series appear: funnel steps of
    a known user (funnel rows), a user id that would join a second user id to the first
    user's anonymous id (a guard refusal, exclusive_conflict), an anonymous visitor who
    then logs in as a known user (a merge), and a step two hours older than the newest
    event of the partition (a late event for the funnels processor)."""
    now = time.time()

    def at(seconds_ago: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - seconds_ago))

    u1, u2, u3, a1, a2 = (f"helm-{run}-{n}" for n in ("u1", "u2", "u3", "a1", "a2"))
    calls = [
        {"type": "track", "event": "Product Viewed", "userId": u1, "anonymousId": a1,
         "timestamp": at(60)},
        {"type": "track", "event": "Product Added", "userId": u1, "timestamp": at(0)},
        {"type": "identify", "userId": u2, "anonymousId": a1, "timestamp": at(0)},
        {"type": "page", "name": "Home", "anonymousId": a2, "timestamp": at(0)},
        {"type": "track", "event": "Product Viewed", "userId": u3, "timestamp": at(0)},
        {"type": "identify", "userId": u3, "anonymousId": a2, "timestamp": at(0)},
        {"type": "track", "event": "Checkout Started", "userId": u1, "timestamp": at(7200)},
    ]
    for i, c in enumerate(calls):
        c["messageId"] = f"helm-{run}-{i}"
    return json.dumps({"batch": calls}).encode()


def labelled(scrape: str, name: str) -> dict[str, float]:
    """Series of `name` in a text exposition: the label part -> value."""
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", scrape, re.M)
    }


@pytest.fixture(scope="module")
def live_scrapes(zt_bin, tmp_path_factory):
    """Scrapes of /metrics of live processes against the local stack, after traffic that
    makes every labelled series appear: a healthy ingest (accepted and rejected events), a
    healthy sink (rows inserted, a dead letter, lag), an ingest whose topics do not exist
    (publish errors, 503), a sink whose ClickHouse is down (errors, /readyz failing), the
    three stream processors reading what the healthy ingest published (resolved events,
    a merge, a guard refusal, funnel rows, a late event, lag) and, on topics of their own,
    an identity processor whose graph log holds a record no resolver wrote (bad_edge
    errors) and profiles and funnels processors with an unreachable second bootstrap
    broker (kafka client errors)."""
    tmp = tmp_path_factory.mktemp("live")
    kafka = os.environ.get("ZT_TEST_KAFKA", "127.0.0.1:9092")
    ch_url = os.environ.get("ZT_TEST_CLICKHOUSE", "http://127.0.0.1:8123")
    run = uuid.uuid4().hex[:10]
    prefix, database = f"zthelm{run}", f"zt_helm_{run}"
    # What `zt ingest hash-key` prints, computed independently.
    digest = hashlib.sha256(MARKETING_KEY.encode()).hexdigest()
    tracking_digest = hashlib.sha256(TRACKING_KEY.encode()).hexdigest()
    cfg = tmp / "zhongtai.toml"
    cfg.write_text(
        f"""
[kafka]
bootstrap_servers = "{kafka}"
[kafka.consumer]
session_timeout_ms = 6000
max_poll_interval_ms = 7000
[topics]
prefix = "{prefix}"
partitions = 1
[clickhouse]
url = "{ch_url}"
database = "{database}"
[sink]
batch_max_age_ms = 200
lag_interval_ms = 500
insert_timeout_ms = 5000
retry_max_backoff_ms = 500
[ingest.sources.marketing]
write_keys = [{{ id = "helm-check", sha256 = "{digest}" }}]
[ingest.sources.tracking]
write_keys = [{{ id = "helm-check-tracking", sha256 = "{tracking_digest}" }}]
[identity]
group_id = "{prefix}-identity"
[profiles]
group_id = "{prefix}-profiles"
[funnels]
group_id = "{prefix}-funnels"
allowed_lateness_ms = 60000
"""
    )
    base = ["--config", str(cfg)]
    # The failing processors get topics and groups of their own, so that they neither share
    # the healthy processors' groups nor write to their topics.
    failing = f"{prefix}x"
    failing_env = {
        "ZT__TOPICS__PREFIX": failing,
        **{f"ZT__{p.upper()}__GROUP_ID": f"{failing}-{p}" for p in PROCESSORS},
    }
    dead_broker_env = {
        **failing_env,
        "ZT__KAFKA__BOOTSTRAP_SERVERS": f"{kafka},127.0.0.1:{free_port()}",
        # Connect to every bootstrap broker at once: the dead one fails deterministically.
        "ZT__KAFKA__OPTIONS__ENABLE_SPARSE_CONNECTIONS": "false",
    }
    for args, env in (
        (["topics", "create"], {}),
        (["topics", "create"], {"ZT__TOPICS__PREFIX": failing}),
        (["migrate"], {}),
    ):
        r = subprocess.run(
            [str(zt_bin), *base, *args],
            env=clean_env(**env),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, f"zt {' '.join(args)} failed (is the local stack up?):\n{r.stderr}"
    # A record in the identity graph log that no resolver wrote (not an edge). The identity
    # processor reads any partition error of its log reader as fatal, so an unreachable
    # broker would stop it rather than be counted: its error series comes from this.
    r = subprocess.run(
        [tansu(), "cat", "produce", f"{failing}.identity.edges"]
        + ["--broker", f"tcp://{kafka.split(',')[0]}"],
        input='{"key": "not-an-edge", "value": "written by no resolver"}\n',
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, f"tansu cat produce failed:\n{r.stdout}{r.stderr}"

    procs: dict[str, Proc] = {}
    admin: dict[str, str] = {}
    public: dict[str, str] = {}

    def start(name: str, command: str, **env: str) -> None:
        port = free_port()
        admin[name] = f"http://127.0.0.1:{port}"
        env["ZT__ADMIN__LISTEN"] = f"127.0.0.1:{port}"
        if command == "ingest":
            port = free_port()
            public[name] = f"http://127.0.0.1:{port}"
            env["ZT__INGEST__LISTEN"] = f"127.0.0.1:{port}"
        procs[name] = Proc(name, zt_bin, [*base, *command.split()], clean_env(**env), tmp)

    def logs() -> str:
        return "\n".join(p.tail() for p in procs.values())

    def status(name: str, path: str) -> int:
        return http("GET", admin[name] + path)[0]

    def metrics(name: str) -> str:
        return http("GET", admin[name] + "/metrics")[1]

    def post_tracking() -> tuple[int, str]:
        key = base64.b64encode(f"{TRACKING_KEY}:".encode()).decode()
        headers = {"Authorization": f"Basic {key}", "Content-Type": "application/json"}
        return http("POST", public["ingest"] + "/v1/batch", tracking_batch(run), headers, 30)

    def post_events(name: str) -> tuple[int, str]:
        key = base64.b64encode(f"{MARKETING_KEY}:".encode()).decode()
        headers = {"Authorization": f"Basic {key}", "Content-Type": "application/json"}
        url = public[name] + "/v1/sources/marketing/events"
        return http("POST", url, marketing_events(), headers, timeout=30)

    try:
        start("ingest", "ingest")
        start("sink", "sink")
        # Topics that were never created: the broker answers, publishes are not acknowledged.
        start(
            "ingest_broker_failing",
            "ingest",
            ZT__TOPICS__PREFIX=f"{prefix}missing",
            ZT__KAFKA__PRODUCER__MESSAGE_TIMEOUT_MS="1500",
            ZT__INGEST__PUBLISH_TIMEOUT_MS="1500",
        )
        start(
            "sink_clickhouse_down",
            "sink",
            ZT__CLICKHOUSE__URL=f"http://127.0.0.1:{free_port()}",
            ZT__SINK__GROUP_ID=f"{prefix}-down",
        )
        for p in PROCESSORS:
            start(p, f"process {p}")
        start("identity_bad_edge", "process identity", **failing_env)
        for p in ("profiles", "funnels"):
            start(f"{p}_broker_failing", f"process {p}", **dead_broker_env)

        wait_for("ingest /readyz", lambda: status("ingest", "/readyz") == 200, 30, logs)
        # Its suppression list topic does not exist either: live, never ready (an earlier
        # version of this test waited for it to be ready and passed only when it polled
        # before ingest had registered its readiness check).
        wait_for(
            "ingest_broker_failing /livez",
            lambda: status("ingest_broker_failing", "/livez") == 200,
            30,
            logs,
        )
        code, body = http("GET", admin["ingest_broker_failing"] + "/readyz")
        assert code == 503 and "suppression list" in body, (code, body)
        wait_for(  # its public listener is bound a moment after the admin server
            "ingest_broker_failing to answer",
            lambda: post_events("ingest_broker_failing")[0] == 503,
            30,
            logs,
        )
        wait_for(
            "sink /readyz (partitions assigned)", lambda: status("sink", "/readyz") == 200, 60, logs
        )

        code, body = post_events("ingest")
        assert code == 200, (code, body, logs())
        answer = json.loads(body)
        assert answer["accepted"] == 2, answer
        assert [r["reason"] for r in answer["rejected"]] == ["missing_field"], answer
        code, body = post_events("ingest_broker_failing")
        assert code == 503, (code, body, logs())
        code, body = post_tracking()
        assert code == 200, (code, body, logs())
        answer = json.loads(body)
        assert answer["accepted"] == 7 and not answer["rejected"], answer

        needed = (
            "zt_sink_dead_lettered_total{",
            "zt_sink_rows_inserted_total{",
            "zt_sink_consumer_lag_records{",
        )
        wait_for(
            "the sink to load the events and dead-letter one",
            lambda: all(n in metrics("sink") for n in needed),
            60,
            logs,
        )
        wait_for(
            "the ClickHouse-less sink to count errors",
            lambda: "zt_sink_errors_total{" in metrics("sink_clickhouse_down"),
            30,
            logs,
        )

        # The processors: identity resolves what ingest published; profiles and funnels
        # read identity's output (checked through their counters); the consumer lag is
        # exported every 5 s once partitions are assigned and fetched.
        def counted(name: str, metric: str, labels: str = "") -> float:
            series = labelled(metrics(name), metric)
            return sum(v for k, v in series.items() if labels in (k or ""))

        def processors_done() -> bool:
            return (
                counted("identity", "zt_identity_events_total", 'outcome="resolved"') >= 7
                and counted("identity", "zt_identity_events_total", 'outcome="anonymous"') >= 2
                and counted("identity", "zt_identity_merges_total") >= 1
                and counted("identity", "zt_identity_guard_refusals_total") >= 1
                # 7 tracking events with a person, 2 marketing events without one.
                and counted("profiles", "zt_profiles_records_total", 'kind="event"') >= 9
                and counted("funnels", "zt_funnels_records_total", 'kind="event"') >= 9
                and counted("funnels", "zt_funnels_rows_total") >= 1
                and counted("funnels", "zt_funnels_late_events_total") >= 1
                and all(f"zt_{p}_consumer_lag{{" in metrics(p) for p in PROCESSORS)
            )

        wait_for(
            "the processors to resolve, profile and funnel the events", processors_done, 45, logs
        )
        wait_for(
            "the failing processors to count errors",
            lambda: 'zt_identity_errors_total{kind="bad_edge"}' in metrics("identity_bad_edge")
            and all(
                f'zt_{p}_errors_total{{kind="kafka"}}' in metrics(f"{p}_broker_failing")
                for p in ("profiles", "funnels")
            ),
            30,
            logs,
        )

        health = {n: (status(n, "/livez"), http("GET", admin[n] + "/readyz")) for n in procs}
        scrapes = {n: metrics(n) for n in procs}
        yield {"scrapes": scrapes, "health": health, "logs": logs}
    finally:
        for p in procs.values():
            p.stop()
        try:
            http("POST", ch_url + "/", f"DROP DATABASE IF EXISTS {database}".encode())
        except OSError:
            pass


def test_admin_endpoints_behave_as_the_probes_assume(live_scrapes):
    health = live_scrapes["health"]
    for name in ("ingest", "sink", *PROCESSORS):
        live, (ready, _) = health[name]
        assert (live, ready) == (200, 200), name
    # An unreadable graph-log record is skipped, one unreachable bootstrap broker among
    # reachable ones is retried: counted, but live and ready.
    for name in ("identity_bad_edge", "profiles_broker_failing", "funnels_broker_failing"):
        live, (ready, _) = health[name]
        assert (live, ready) == (200, 200), name
    # ClickHouse down: not ready (taken out of the Service), but live (not restarted).
    live, (ready, body) = health["sink_clickhouse_down"]
    assert (live, ready) == (200, 503)
    assert "clickhouse" in json.loads(body)["failing"]


def exported(live_scrapes) -> set[str]:
    return set().union(*(exported_series_names(t) for t in live_scrapes["scrapes"].values()))


def test_dashboard_uses_only_exported_metrics(live_scrapes):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 15
    used = set().union(*(promql_metric_names(e) for e in exprs))
    # What the dashboard must show (the issue): ingest rate and errors, produce latency,
    # sink rows and insert latency, consumer lag, dead letters.
    for name in (
        "zt_ingest_requests_total",
        "zt_ingest_errors_total",
        "zt_ingest_produce_latency_seconds_bucket",
        "zt_sink_rows_inserted_total",
        "zt_sink_insert_duration_seconds_bucket",
        "zt_sink_consumer_lag_records",
        "zt_ingest_events_rejected_total",
        "zt_sink_dead_lettered_total",
    ):
        assert name in used, name
    assert missing_metrics(exprs, exported(live_scrapes)) == {}


# Series Prometheus writes itself for every target; no /metrics exports them.
PROMETHEUS_SERIES = {"up"}


def test_alerts_use_only_exported_metrics(live_scrapes):
    exprs = rules_exprs(yaml.safe_load(RULES.read_text()))
    assert len(exprs) >= 8
    assert missing_metrics(exprs, exported(live_scrapes) | PROMETHEUS_SERIES) == {}
    # Without the allowance, `up` is reported (the comparison sees it).
    assert {"up"} in missing_metrics(exprs, exported(live_scrapes)).values()


def test_a_dashboard_with_an_unknown_metric_is_caught(live_scrapes):
    # Negative control: the same comparison on the dashboard plus one made-up metric.
    dashboard = json.loads(DASHBOARD.read_text())
    dashboard["panels"][1]["targets"].append(
        {"refId": "Z", "expr": 'sum(rate(zt_ingest_requests_rejected_total{job="x"}[5m]))'}
    )
    missing = missing_metrics(dashboard_exprs(dashboard), exported(live_scrapes))
    assert list(missing.values()) == [{"zt_ingest_requests_rejected_total"}]
    # A histogram is known by its base name too, but a made-up suffix is not.
    assert missing_metrics(["zt_sink_insert_duration_seconds"], exported(live_scrapes)) == {}
    assert missing_metrics(["zt_sink_insert_duration_seconds_total"], exported(live_scrapes))


def promtool_run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [promtool(), *args], input=stdin, capture_output=True, text=True, timeout=30
    )


def tansu() -> str:
    """The local stack's broker binary; its `cat produce` writes a raw record."""
    path = shutil.which("tansu") or str(Path.home() / ".cargo" / "bin" / "tansu")
    assert Path(path).exists(), "tansu is missing: deploy/local/stack.sh install installs it"
    return path


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, (
        "promtool is missing: install Debian's `prometheus` package "
        "(deploy/local/stack.sh install does it)"
    )
    return path


def test_every_scrape_is_clean_under_promtool(live_scrapes):
    for name, text in live_scrapes["scrapes"].items():
        r = promtool_run(["check", "metrics"], text)
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), (name, r.stdout, r.stderr)


def test_promtool_check_metrics_can_fail():
    # Negative control: a counter without the _total suffix.
    bad = "# HELP zt_bad_requests requests\n# TYPE zt_bad_requests counter\nzt_bad_requests 1\n"
    r = promtool_run(["check", "metrics"], bad)
    assert r.returncode != 0 and "_total" in r.stdout + r.stderr


def promtool_check_rules(groups: list[dict], tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / f"rules-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    return promtool_run(["check", "rules", str(path)])


def grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "5m").replace("$namespace", ".*")


def test_alert_rules_and_dashboard_queries_parse(tmp_path):
    rules = yaml.safe_load(RULES.read_text())
    assert rules["apiVersion"] == "monitoring.coreos.com/v1" and rules["kind"] == "PrometheusRule"
    r = promtool_check_rules(rules["spec"]["groups"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for g in rules["spec"]["groups"]:
        for rule in g["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            annotations = rule["annotations"]
            assert annotations["summary"] and annotations["description"], rule["alert"]
    names = [r["alert"] for g in rules["spec"]["groups"] for r in g["rules"]]
    assert len(names) == len(set(names))
    # The dashboard's queries, as recording rules, through the same parser.
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    recording = [
        {"record": f"zt:dashboard:{i}", "expr": grafana_to_promql(e)}
        for i, e in enumerate(exprs)
        if not e.startswith("label_values")
    ]
    r = promtool_check_rules([{"name": "dashboard", "rules": recording}], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    # Negative control: an unbalanced query fails the same check.
    bad = {"record": "x:y", "expr": "sum(rate(zt_build_info[5m])"}
    r = promtool_check_rules([{"name": "bad", "rules": [bad]}], tmp_path)
    assert r.returncode != 0


def test_processor_down_alert_selects_the_processor_pods(chart):
    """ZhongtaiProcessorDown reads `up` by the pod label the ServiceMonitor copies onto its
    targets (the processors are optional, so absent(zt_build_info) would fire wherever they
    are not deployed): the label must be copied and select exactly the processors' pods."""
    rules = yaml.safe_load(RULES.read_text())
    (rule,) = [
        r for g in rules["spec"]["groups"] for r in g["rules"] if r["alert"] == "ZhongtaiProcessorDown"
    ]
    m = re.search(r'up\{app_kubernetes_io_component=~"([^"]+)"\}', rule["expr"])
    assert m, rule["expr"]
    values = values_for("ci")
    values["processors"] = {p: {"enabled": True} for p in PROCESSORS}
    docs = render(chart, values)
    (sm,) = by_kind(docs, "ServiceMonitor")
    assert "app.kubernetes.io/component" in sm["spec"]["podTargetLabels"]
    components = {
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        for d in by_kind(docs, "Deployment")
    }
    assert {"ingest", "sink", *PROCESSORS} <= components
    assert {c for c in components if re.fullmatch(m.group(1), c)} == set(PROCESSORS)


def test_dashboard_structure():
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] == "zhongtai-overview" and d["title"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            assert 'namespace=~"$namespace"' in t["expr"], (p["title"], t["expr"])
    # No two panels overlap on the grid.
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        xs, ys = range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])
        mine = {(x, y) for x in xs for y in ys}
        assert not cells & mine, p["title"]
        cells |= mine


# Libraries the runtime stage of the Dockerfile provides: debian:bookworm-slim carries
# libc6, libgcc-s1 and zlib1g; the Dockerfile installs libssl3. (The machines have no
# Docker engine to build the image; this checks what the binary needs from it.)
IMAGE_LIBRARIES = {
    "linux-vdso.so.1", "ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libgcc_s.so.1",
    "libz.so.1", "libssl.so.3", "libcrypto.so.3",
}


def needed_libraries(binary: Path) -> set[str]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    return {Path(line.split()[0]).name for line in out.splitlines() if line.strip()}


def test_the_binary_needs_only_what_the_runtime_image_has(zt_bin):
    needed = needed_libraries(zt_bin)
    assert "libc.so.6" in needed, needed
    assert needed <= IMAGE_LIBRARIES, f"not in the runtime image: {needed - IMAGE_LIBRARIES}"
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    runtime = dockerfile.split("FROM debian:bookworm-slim", 1)[1]
    assert "libssl3" in runtime and "USER 65532:65532" in runtime
    # Negative control: a library the image lacks is reported.
    assert not ({"libpq.so.5"} | needed) <= IMAGE_LIBRARIES
