"""The commands deploy/ runs exist: CLI flags against `hashserve ... --help`, the systemd unit.

The compose file, the KubeRay Deployment and the systemd unit each start `hashserve scheduler` or
`hashserve agent` with flags; a renamed flag would only show when a container or a unit fails to
start, so the flags are checked against the CLI's own help here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "hashserve-agent.service"
_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


@cache
def cli_flags(command: str) -> frozenset[str]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", TERM="dumb")
    done = subprocess.run(
        [sys.executable, "-m", "hashserve", command, "--help"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"`hashserve {command} --help` failed here: {done.stderr[-300:]}")
    return frozenset(_FLAG.findall(done.stdout))


def unit_exec_start() -> list[str]:
    text = UNIT.read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    return line.removeprefix("ExecStart=").split()


def deploy_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after `hashserve`) for every invocation in deploy/."""
    commands: list[tuple[str, list[str]]] = []
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        if isinstance(service.get("command"), list) and service.get("image", "").startswith(
            "hashserve"
        ):
            commands.append((f"compose {name}", service["command"]))
    for doc in yaml.safe_load_all((DEPLOY / "kuberay" / "scheduler.yaml").read_text()):
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                commands.append((f"kuberay {container['name']}", container["args"]))
    commands.append(("systemd", unit_exec_start()[1:]))
    return commands


def test_deploy_files_start_both_commands() -> None:
    used = {argv[0] for _, argv in deploy_commands()}
    assert used == {"scheduler", "agent"}


@pytest.mark.parametrize(("where", "argv"), deploy_commands(), ids=lambda v: str(v)[:40])
def test_flags_exist_in_the_cli(where: str, argv: list[str]) -> None:
    known = cli_flags(argv[0])
    used = {arg.split("=", 1)[0] for arg in argv[1:] if arg.startswith("--")}
    assert used, where
    assert used <= known, f"{where}: unknown flags {sorted(used - known)}"


def _unit_flag(argv: list[str], flag: str) -> str:
    return next(a.split("=", 1)[1] for a in argv if a.startswith(f"{flag}="))


def test_unit_passes_secrets_as_credentials_not_environment() -> None:
    argv = unit_exec_start()
    for flag in ("--bootstrap-token-file", "--tls-ca"):
        assert _unit_flag(argv, flag).startswith("${CREDENTIALS_DIRECTORY}/"), flag
    env_example = (DEPLOY / "systemd" / "agent.env.example").read_text()
    assert not re.search(r"^HASHSERVE_AGENT_(TOKEN|BOOTSTRAP|TLS)", env_example, flags=re.M)
    # Every ${VAR} the unit expands is set in the example env file (or by systemd itself).
    expanded = set(re.findall(r"\$\{(\w+)\}", " ".join(argv))) - {
        "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY"
    }
    defined = set(re.findall(r"^(\w+)=", env_example, flags=re.M))
    assert expanded <= defined, sorted(expanded - defined)


def test_unit_enrolls_into_its_state_directory() -> None:
    text = UNIT.read_text()
    argv = unit_exec_start()
    # The enrolled key and certificate replace hand-made ones; they live in StateDirectory=.
    assert "StateDirectory=hashserve-agent" in text.splitlines()
    assert _unit_flag(argv, "--state-dir") == "${STATE_DIRECTORY}"
    credentials = dict(
        ln.removeprefix("LoadCredential=").split(":", 1) for ln in text.splitlines()
        if ln.startswith("LoadCredential=")
    )
    assert credentials == {"bootstrap-token": "/etc/hashserve/bootstrap-token",
                           "tls-ca.pem": "/etc/hashserve/tls/ca.pem"}
    assert _unit_flag(argv, "--bootstrap-token-file") == "${CREDENTIALS_DIRECTORY}/bootstrap-token"
    used = {a.split("=", 1)[0] for a in argv}
    assert not used & {"--token", "--token-file", "--tls-cert", "--tls-key"}
    # It enrolls on the customers' port and then dials the agents' mutual-TLS port.
    env = dict(re.findall(r"^(\w+)=(.*)$", (DEPLOY / "systemd" / "agent.env.example").read_text(),
                          flags=re.M))
    assert _unit_flag(argv, "--enroll-address") == "${HASHSERVE_AGENT_ENROLL_ADDRESS}"
    assert env["HASHSERVE_AGENT_ENROLL_ADDRESS"].endswith(":50051")
    assert env["HASHSERVE_AGENT_SCHEDULER"].endswith(":50052")


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not found")
    # The venv of a real install is not here: point ExecStart at a binary that exists, so
    # verify judges the rest of the unit.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/hashserve/bin/hashserve", "/bin/true"))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    if "Failed to connect to bus" in done.stderr or "System has not been booted" in done.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {done.stderr.strip()[:200]}")
    problems = [ln for ln in done.stderr.splitlines() if UNIT.name in ln]
    assert done.returncode == 0 and not problems, done.stderr
