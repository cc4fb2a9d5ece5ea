"""The Grafana dashboard and the alert rules against a real Prometheus and promtool.

A real `prometheus` scrapes a real sidecar's metrics port while the test drives allowed, denied,
not-found, rate-limited and failing calls; then every PromQL expression of every dashboard
panel (template variables substituted) and every rule is evaluated through the HTTP API.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from support import request, stub
from test_metrics_support import PRINCIPAL, http_get, seed, wait_until, write_policy

from featuresidecar_server import processes
from featuresidecar_server.devredis import free_port

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "feature-sidecar.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yaml"
VARIABLES = {"$namespace": "test-ns", "$pod": "test-pod", "$__rate_interval": "1m"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not on PATH (Debian/Ubuntu: apt-get install prometheus)")
    return path


def _panels() -> list[dict[str, Any]]:
    document = json.loads(DASHBOARD.read_text())
    out = []
    for panel in document["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return [p for p in out if p.get("type") != "row"]


def _queries() -> list[tuple[str, str, dict[str, Any]]]:
    """(panel title, PromQL with the template variables substituted, target)."""
    found = []
    for panel in _panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for name in sorted(VARIABLES, key=len, reverse=True):
                expr = expr.replace(name, VARIABLES[name])
            found.append((panel["title"], expr, target))
    return found


def _rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


# --- the files themselves ------------------------------------------------------------------------


def test_the_dashboard_is_importable_with_its_variables() -> None:
    document = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "pod"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variables[name]["includeAll"] is True
    assert 'namespace=~"$namespace"' in variables["pod"]["definition"]
    assert document["uid"] == "feature-sidecar"
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"] for p in _panels()).lower()
    for topic in (
        "request rate",
        "error ratio",
        "latency",
        "entities per request",
        "values by status",
        "freshness",
        "denials",
        "rate limiting",
        "redis latency",
        "redis errors",
        "bundle revision",
        "since last successful bundle",
        "decision-log drops",
        "cpu",
        "memory",
    ):
        assert topic in titles, topic
    for title, expr, target in _queries():
        assert "$" not in expr, (title, expr)
        assert target["datasource"]["uid"] == "${datasource}"
        # Every metric selector is scoped to the chosen namespace and pod.
        for selector in re.findall(r"\{[^{}]*\}", target["expr"]):
            if "=" in selector and "le" not in selector.split("=")[0]:
                assert 'namespace=~"$namespace"' in selector and 'pod=~"$pod"' in selector, (
                    title,
                    selector,
                )
    latency = next(p for p in _panels() if p["title"] == "GetFeatures latency")
    assert [t["legendFormat"] for t in latency["targets"]] == ["p50", "p95", "p99"]


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    promtool = _tool("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert alerts == {
        "FeatureSidecarHighErrorRatio",
        "FeatureSidecarHighLatencyP99",
        "FeatureSidecarRedisDown",
        "FeatureSidecarBundleStale",
        "FeatureSidecarBundleFailing",
        "FeatureSidecarRevisionMismatch",
        "FeatureSidecarDecisionLogDrops",
    }
    fires, quiet = set(), set()
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fires == alerts
    assert quiet == alerts


# --- a real Prometheus ---------------------------------------------------------------------------


class Prometheus:
    def __init__(self, binary: str, directory: Path, target: str) -> None:
        self.port = free_port()
        config = directory / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(ALERTS)],
                    "scrape_configs": [
                        {
                            "job_name": "feature-sidecar",
                            "static_configs": [
                                {
                                    "targets": [target],
                                    "labels": {"namespace": "test-ns", "pod": "test-pod"},
                                }
                            ],
                        }
                    ],
                }
            )
        )
        self.log = directory / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.base = f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-2000:]
        try:
            return http_get(f"{self.base}/-/ready")[0] == 200
        except OSError:
            return False

    def query(self, expr: str) -> dict[str, Any]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        _, _, body = http_get(url)
        answer: dict[str, Any] = json.loads(body)
        return answer

    def value(self, expr: str) -> float:
        """The value of a query that gives one sample; NaN when it gives none."""
        result = self.query(expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else float("nan")

    def rules(self) -> list[dict[str, Any]]:
        groups = json.loads(http_get(f"{self.base}/api/v1/rules")[2])["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def stop(self) -> None:
        processes.stop(self.process, grace=20)


def test_every_panel_and_rule_evaluates_on_a_real_prometheus(
    redis_server: Any, sidecar_factory: Any, tmp_path: Path
) -> None:
    binary = _tool("prometheus")
    policy = write_policy(
        tmp_path, "limits:\n  - roles: [scorer]\n    requests_per_second: 50\n    burst: 20\n"
    )
    seed(redis_server.url, policy)
    sidecar = sidecar_factory(
        redis=redis_server.url,
        bundle=str(policy),
        workload_principal=PRINCIPAL,
        metrics_listen="127.0.0.1:0",
        redis_timeout=0.3,
    )
    prometheus = Prometheus(binary, tmp_path, sidecar.sidecar.http.address)
    try:
        wait_until(prometheus.ready, timeout=30, what="Prometheus to start")
        _, client = stub(sidecar.address)
        allowed = request(["profile:age", "profile:email", "stats:clicks"], {"user_id": [1, 2, 3]})

        def code(message: Any) -> grpc.StatusCode:
            try:
                client.GetFeatures(message, timeout=5)
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        codes = [code(allowed) for _ in range(5)]
        codes.append(code(request(["stats:score"], {"user_id": [1]})))
        codes.append(code(request(["profile:nope"], {"user_id": [1]})))
        codes.extend(code(allowed) for _ in range(40))  # over the burst of 20
        redis_server.stop()
        # Until the rate limiter has a token again, calls are refused before Redis is asked.
        codes.append(
            wait_until(
                lambda: (got := code(allowed)) != grpc.StatusCode.RESOURCE_EXHAUSTED and got,
                what="a call that reaches the stopped Redis",
            )
        )
        assert set(codes) == {
            grpc.StatusCode.OK,
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.UNAVAILABLE,
        }
        wait_until(
            lambda: (
                prometheus.value('sum(grpc_server_handled_total{grpc_code="Unavailable"})') == 1
                and prometheus.value("count_over_time(feature_sidecar_build_info[1m])") >= 3
            ),
            timeout=30,
            what="Prometheus to scrape the calls",
        )

        empty = []
        for title, expr, _ in _queries():
            answer = prometheus.query(expr)
            assert answer["status"] == "success", (title, expr, answer)
            if not answer["data"]["result"]:
                empty.append((title, expr))
        assert empty == []

        for rule in _rules():
            answer = prometheus.query(rule["expr"])
            assert answer["status"] == "success", (rule, answer)
        # Prometheus loaded the rule file itself and evaluates every rule without an error.
        assert len(prometheus.rules()) == len(_rules())
        wait_until(
            lambda: all(r["health"] == "ok" for r in prometheus.rules()),
            what="every rule to evaluate",
        )
        # The numbers reached Prometheus as the sidecar counted them.
        assert prometheus.value('sum(feature_sidecar_policy_decisions_total{decision="deny"})') == 1
        assert prometheus.value("sum(feature_sidecar_rate_limited_total)") >= 1
        assert prometheus.value('feature_sidecar_redis_up{pod="test-pod"}') == 0
    finally:
        prometheus.stop()
