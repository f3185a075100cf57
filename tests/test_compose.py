"""docker-compose.yml, the Dockerfile and .env.example, checked without a Docker
engine: every command is a real `mentionsync` or `celery` invocation, services
wait for what they need, health checks exist where something waits on them (and
beat's fails when it stops ticking), and the environment matches the settings
object."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from worker.config import Settings

COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
APP = {name for name, svc in SERVICES.items() if svc.get("image") == "mentionsync:latest"}
LONG_RUNNING = APP - {"migrate"}
BIN = Path(sys.executable).parent
SETTINGS = {name.upper() for name in Settings.model_fields}
# Read by prometheus_client itself, not by the settings object.
NOT_SETTINGS = {"PROMETHEUS_MULTIPROC_DIR"}
COMPOSE_ONLY = {"POSTGRES_PASSWORD", "PUBLISH_ADDRESS"}


def env_example() -> set[str]:
    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        if match := re.match(r"^#?\s?([A-Z][A-Z0-9_]+)=", line):
            names.add(match.group(1))
    return names


def test_the_issue_s_services_are_there_and_built_from_this_repo() -> None:
    assert {"postgres", "redis", "migrate", "worker", "beat", "flower", "api"} <= set(SERVICES)
    assert {"migrate", "worker", "beat", "flower", "api", "metrics"} == APP
    for name in APP:
        assert SERVICES[name]["build"] == "."
        assert "entrypoint" not in SERVICES[name], name  # the command is the whole argv
    assert SERVICES["postgres"]["image"] == "postgres:16"
    assert SERVICES["redis"]["image"] == "redis:7"
    assert "noeviction" in SERVICES["redis"]["command"]
    # Named volumes: the archive survives `docker compose down`.
    assert SERVICES["postgres"]["volumes"][0].startswith("pgdata:")
    assert "pgdata" in COMPOSE["volumes"]


def _help(argv: list[str]) -> subprocess.CompletedProcess[str]:
    # `--help` after the options: click still rejects an unknown command or option.
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )


def test_every_command_is_a_real_invocation() -> None:
    commands = {name: SERVICES[name]["command"] for name in sorted(APP)}
    for name, argv in commands.items():
        assert isinstance(argv, list) and argv[0] in ("mentionsync", "celery"), name
        if argv[0] == "celery":
            assert argv[1:3] == ["-A", "worker.app"], name
    checked = {n: a for n, a in commands.items() if a[3:4] != ["flower"]}
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(checked, pool.map(_help, checked.values()), strict=True))
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stdout[-500:], result.stderr[-2000:])
        assert "Usage:" in result.stdout, name

    # Flower hands its options to tornado: check the subcommand exists and that
    # each option is one flower defines.
    flower = commands["flower"]
    assert flower[3] == "flower"
    assert _help(flower[:4]).returncode == 0
    from flower.options import options

    for arg in flower[4:]:
        option = arg.removeprefix("--").split("=")[0]
        assert option in options._options, arg

    # And the control: the check above does fail for a command that does not exist.
    assert _help(["mentionsync", "serve", "--no-such-option"]).returncode != 0
    assert _help(["celery", "-A", "worker.app", "wurker"]).returncode != 0


def test_dependencies_and_healthchecks_are_wired() -> None:
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["mentionsync", "db", "upgrade"]
    assert migrate["restart"] == "no"  # one-shot
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in LONG_RUNNING:
        deps = SERVICES[name]["depends_on"]
        assert deps["migrate"] == {"condition": "service_completed_successfully"}, name
        assert deps["postgres"] == {"condition": "service_healthy"}, name
        assert deps["redis"] == {"condition": "service_healthy"}, name
    for name, svc in SERVICES.items():
        for dep, how in svc.get("depends_on", {}).items():
            assert dep in SERVICES, (name, dep)
            if how["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dep], (name, dep)

    # Every service with a port proves it answers there.
    ports = {
        "api": "8000",
        "metrics": "9800",
        "flower": "5555",
        "worker": SERVICES["worker"]["environment"]["WORKER_METRICS_PORT"],
    }
    for name, port in ports.items():
        test = " ".join(SERVICES[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/" in test, name
        assert port in " ".join(SERVICES[name]["command"]) or name == "worker", name
    assert "/readyz" in " ".join(SERVICES["api"]["healthcheck"]["test"])
    # Nothing is published on every interface by default: /metrics, /readyz and
    # flower answer without a token.
    for name, svc in SERVICES.items():
        for mapping in svc.get("ports", []):
            host = mapping.rsplit(":", 2)[0]
            assert host in ("127.0.0.1", "${PUBLISH_ADDRESS:-127.0.0.1}"), (name, mapping)

    # Scalable: no fixed host port, no container name on workers.
    worker = SERVICES["worker"]
    assert "ports" not in worker and "container_name" not in worker
    assert worker["environment"]["PROMETHEUS_MULTIPROC_DIR"] in worker["tmpfs"]
    assert "ports" not in SERVICES["beat"] and "container_name" not in SERVICES["beat"]


def test_beat_is_unhealthy_when_it_stops_ticking() -> None:
    """The beat service's healthcheck is a real command that passes while a beat
    of its own host ticks, and fails when that beat is stale or absent, whatever
    beats elsewhere do."""
    from sqlalchemy import text

    from tests.resources import session_scope

    check = SERVICES["beat"]["healthcheck"]
    assert check["test"][:2] == ["CMD", "mentionsync"]
    argv = [str(BIN / "mentionsync"), *check["test"][2:]]
    assert argv[1:] == ["scheduler", "check", "--local"]
    help_ = _help(check["test"][1:])
    assert help_.returncode == 0 and "Usage:" in help_.stdout

    def row(instance: str, tick_ago: float) -> None:
        with session_scope() as session:
            session.execute(text("DELETE FROM scheduler_heartbeats"))
            session.execute(
                text(
                    "INSERT INTO scheduler_heartbeats VALUES (:i, now() - interval '1 hour',"
                    " now() - make_interval(secs => :t), now())"
                ),
                {"i": instance, "t": tick_ago},
            )

    def healthy() -> bool:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, env=dict(os.environ), check=False
        )
        assert result.returncode in (0, 1), result.stderr
        return result.returncode == 0

    here = socket.gethostname()
    row(f"{here}:1", tick_ago=1)
    assert healthy()
    row(f"{here}:1", tick_ago=600)  # this container's beat stopped ticking
    assert not healthy()
    row(f"elsewhere-{here}:1", tick_ago=1)  # a beat of another container does not count
    assert not healthy()
    # Interval times retries: unhealthy within a minute of the check's first failure.
    assert check["retries"] * int(check["interval"].removesuffix("s")) <= 60


def test_the_environment_matches_the_settings_object() -> None:
    documented = env_example()
    # .env.example documents every setting, and nothing that is not one.
    assert documented - COMPOSE_ONLY == SETTINGS
    # Every variable compose hands a container is a setting.
    for name in APP:
        keys = set(SERVICES[name].get("environment", {}))
        assert keys <= SETTINGS | NOT_SETTINGS, (name, keys - SETTINGS - NOT_SETTINGS)
        assert SERVICES[name]["env_file"] == [{"path": ".env", "required": False}], name
    # Every ${VAR} compose interpolates is documented.
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE_TEXT))
    assert interpolated <= documented, interpolated - documented
    # No secret is written into the compose file.
    secret_names = {n for n in SETTINGS if re.search(r"KEY|TOKEN|SECRET|ALERT_WEBHOOK_URL", n)}
    for name in APP:
        assert not secret_names & set(SERVICES[name].get("environment", {})), name
    assert "POSTGRES_PASSWORD:?" in COMPOSE_TEXT  # required, no default password

    # The README's settings table documents every setting too.
    readme = (ROOT / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.startswith("| `"))
    missing = sorted(n for n in SETTINGS if f"`{n}`" not in table)
    assert not missing, missing


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # Compose hands `${VAR:-}` through as an empty string.
    monkeypatch.setenv("MENTIONSAPI_RATE_LIMIT", "")
    monkeypatch.setenv("INTAKE_TOKEN", "")
    settings = Settings()
    assert settings.mentionsapi_rate_limit is None and settings.intake_token is None


def test_the_dockerfile_is_multi_stage_and_runs_as_a_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", dockerfile, re.MULTILINE)
    assert len(stages) >= 2
    runtime = dockerfile[dockerfile.rindex("\nFROM ") :]
    user = re.search(r"^USER\s+(\S+)", runtime, re.MULTILINE)
    assert user and user.group(1) not in ("root", "0")
    assert "useradd" in runtime
    assert "[flower]" in runtime  # `celery ... flower` exists in the image
    # What the build stage copies is what the wheel needs, migrations included.
    for path in ("pyproject.toml", "alembic", "models", "worker"):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", dockerfile, re.MULTILINE), path
