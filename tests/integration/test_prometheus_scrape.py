"""A real Prometheus (Debian's package, on loopback) scrapes a running scheduler, its agents and,
where it is built, the native front before it (as `hashserve up` runs it); the series are read
back through Prometheus's HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hashserve.client import embed_spec
from hashserve.local import AgentPlan, LocalCluster, free_port
from scheduler.front.native import native_front_binary
from tests.integration.cluster import EMBED, client, local_cluster, run

pytestmark = [pytest.mark.integration, pytest.mark.prometheus]

PROMETHEUS = shutil.which("prometheus") or shutil.which("prometheus", path="/usr/bin:/usr/sbin")


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, str]]:
    if PROMETHEUS is None:
        pytest.skip("Debian's `prometheus` package is not installed (.ci/run installs it)")
    workdir = Path(tmp_path_factory.mktemp("prometheus"))
    scheduler_metrics = free_port()
    agents = [
        AgentPlan("na-1", "tx-odessa", "north_america", metrics_port=free_port()),
        AgentPlan("eu-1", "de-leipzig", "europe", metrics_port=free_port()),
    ]
    with local_cluster(
        workdir / "cluster", agents, native_front=native_front_binary() is not None,
        metrics_port=scheduler_metrics, plan_interval_s=0.5
    ) as cluster:
        fronts = ([{"job_name": "hashserve-front", "static_configs": [
            {"targets": [f"127.0.0.1:{cluster.front_metrics_port}"]}]}]
            if cluster.front is not None else [])
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "hashserve-scheduler",
                    "static_configs": [{"targets": [f"127.0.0.1:{scheduler_metrics}"]}],
                },
                {
                    "job_name": "hashserve-agent",
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{a.metrics_port}"],
                            "labels": {"site": a.site, "region": a.region, "node": a.agent_id},
                        }
                        for a in agents
                    ],
                },
                *fronts,
            ],
        }
        (workdir / "prometheus.yml").write_text(json.dumps(config))  # JSON is valid YAML
        port = free_port()
        log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield cluster, f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.close()


def query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def eventually(base: str, promql: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    last: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            last = query(base, promql)
            if last:
                return last
        except OSError:
            pass  # Prometheus still starting
        time.sleep(0.5)
    raise AssertionError(f"no series for {promql!r} within {timeout_s} s (last: {last})")


def test_prometheus_scrapes_the_scheduler_and_every_agent(
    scraped: tuple[LocalCluster, str],
) -> None:
    cluster, base = scraped

    async def submit() -> None:
        async with client(cluster) as c:
            for i in range(4):
                resp = await c.submit(embed_spec(EMBED, [f"scraped {i}"], "interactive"))
                await c.wait(resp.job.id, 60)

    run(submit())
    jobs = {"hashserve-scheduler", "hashserve-agent"}
    if cluster.front is not None:
        jobs.add("hashserve-front")
    eventually(base, f"count(up == 1) == {len(jobs) + 1}")
    up = query(base, "up == 1")
    assert {r["metric"]["job"] for r in up} == jobs
    submitted = eventually(base, 'sum(hashserve_jobs_submitted_total{tier="interactive"}) >= 4')
    assert float(submitted[0]["value"][1]) >= 4
    finished = eventually(base, 'sum(hashserve_jobs_finished_total{outcome="succeeded"}) >= 4')
    assert float(finished[0]["value"][1]) >= 4
    # The agents' own counts, labelled by the scrape config with their sites.
    done = eventually(base, "sum by (site) (hashserve_agent_jobs_completed_total) > 0")
    assert {r["metric"]["site"] for r in done} <= {"tx-odessa", "de-leipzig"}
    # The power plan of every site of the fleet, by use.
    mining = eventually(base, 'hashserve_site_power_watts{use="mining",site="tx-odessa"}')
    assert float(mining[0]["value"][1]) >= 0
    sites = eventually(base, 'count(hashserve_site_power_price_usd_per_mwh)')
    assert float(sites[0]["value"][1]) >= 40
    nodes = eventually(base, "sum(hashserve_node_connected)")
    assert float(nodes[0]["value"][1]) == 2
    # The customers' submits, counted where they were answered: the native front (which hands
    # them to the scheduler in batches) or the scheduler itself.
    at = "hashserve-front" if cluster.front is not None else "hashserve-scheduler"
    handled = eventually(
        base, f'hashserve_grpc_server_handled_total{{job="{at}",grpc_method="SubmitJob",'
        'grpc_code="OK"} >= 4')
    assert float(handled[0]["value"][1]) >= 4
    if cluster.front is not None:
        batched = eventually(base, 'sum(hashserve_front_intake_batch_submits_sum) >= 4')
        assert float(batched[0]["value"][1]) >= 4
        intake = eventually(base, 'hashserve_grpc_server_handled_total{job="hashserve-scheduler",'
                                  'grpc_method="SubmitMany",grpc_code="OK"} > 0')
        assert float(intake[0]["value"][1]) >= 1
