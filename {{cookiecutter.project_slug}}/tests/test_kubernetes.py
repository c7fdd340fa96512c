"""deploy/kubernetes renders, validates against Kubernetes' schemas, and matches the service."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

from {{ cookiecutter.package_name }}.app import create_app
from {{ cookiecutter.package_name }}.settings import Settings

from .conftest import required_tool

PROJECT = Path(__file__).resolve().parents[1]
DEPLOY = PROJECT / "deploy" / "kubernetes"
NAME = "{{ cookiecutter.project_slug | replace('_', '-') }}"  # of the app's objects
# The oldest Kubernetes the manifests are meant for, and the newest the validator has schemas of.
KUBERNETES_VERSIONS = ("1.27", kubernetes_validate.latest_version())
VARIANTS = {
    "app": {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"},
    "pgbouncer": {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    },
    "migrate": {"Job"},
}
TIMES = "\N{MULTIPLICATION SIGN}"
# README.md's budget: (maxReplicas + maxSurge) x WEB_CONCURRENCY x (pool + overflow) = connections.
BUDGET = re.compile(rf"\((\d+) \+ (\d+)\) {TIMES} (\d+) {TIMES} \((\d+) \+ (\d+)\) = (\d+)")

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def kubectl() -> str:
    return required_tool(
        shutil.which("kubectl"),
        "Kubernetes tests need kubectl (with its built-in kustomize) on PATH",
        "REQUIRE_KUBECTL",
    )


def kustomize(kubectl: str, directory: Path) -> list[Manifest]:
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [manifest for manifest in yaml.safe_load_all(result.stdout) if manifest]


def render(kubectl: str, variant: str, tmp_path: Path) -> list[Manifest]:
    """The base, the migration Job, or the base with the PgBouncer component, as a user adds it."""
    if variant == "app":
        return kustomize(kubectl, DEPLOY)
    if variant == "migrate":
        return kustomize(kubectl, DEPLOY / "migrate")
    base = os.path.relpath(DEPLOY, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources:\n  - {base}\n"
        f"components:\n  - {base}/pgbouncer\n"
    )
    return kustomize(kubectl, tmp_path)


def only(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    (found,) = (
        manifest
        for manifest in manifests
        if manifest["kind"] == kind and name in (None, manifest["metadata"]["name"])
    )
    return found


def app_deployment(manifests: list[Manifest]) -> Manifest:
    (deployment,) = (
        manifest
        for manifest in manifests
        if manifest["kind"] == "Deployment"
        and manifest["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    )
    return deployment


def app_container(manifests: list[Manifest]) -> Manifest:
    containers: list[Manifest] = app_deployment(manifests)["spec"]["template"]["spec"]["containers"]
    (container,) = containers
    return container


def environment_of(container: Manifest) -> dict[str, Manifest]:
    return {variable["name"]: variable for variable in container["env"]}


def settings_of(manifests: list[Manifest]) -> dict[str, str]:
    """The ConfigMap the app's container reads its settings from."""
    (source,) = app_container(manifests)["envFrom"]
    data: dict[str, str] = only(manifests, "ConfigMap", source["configMapRef"]["name"])["data"]
    return data


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_object_validates_against_the_kubernetes_schemas(
    kubectl: str, variant: str, tmp_path: Path
) -> None:
    manifests = render(kubectl, variant, tmp_path)

    assert {manifest["kind"] for manifest in manifests} == VARIANTS[variant]
    for manifest in manifests:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)


def test_example_secrets_validate_and_hold_placeholders_only() -> None:
    examples = sorted(DEPLOY.rglob("secret.example.yaml"))

    assert {path.parent.name for path in examples} == {"kubernetes", "pgbouncer"}
    for path in examples:
        secret = yaml.safe_load(path.read_text())
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(secret, version, strict=True)
        assert "PASSWORD" in secret["stringData"]["DATABASE_URL"]


def test_probes_ask_the_service_health_routes_on_its_port(kubectl: str) -> None:
    manifests = kustomize(kubectl, DEPLOY)
    container = app_container(manifests)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    routes = {
        path
        for path, operations in create_app(Settings()).openapi()["paths"].items()
        if "get" in operations
    }
    dockerfile = (PROJECT / "Dockerfile").read_text()
    probes = {
        kind: (container[kind]["httpGet"]["path"], ports[container[kind]["httpGet"]["port"]])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }

    assert probes == {
        "startupProbe": ("/health/live", 8000),
        "livenessProbe": ("/health/live", 8000),
        "readinessProbe": ("/health/ready", 8000),
    }
    assert {"/health/live", "/health/ready"} <= routes
    assert Settings.model_fields["port"].default == 8000
    assert re.search(r"^\s*PORT=8000\b", dockerfile, flags=re.MULTILINE)
    assert re.search(r"^EXPOSE 8000$", dockerfile, flags=re.MULTILINE)
    assert settings_of(manifests)["PORT"] == "8000"
    assert settings_of(manifests)["HOST"] == "0.0.0.0"


def test_readiness_probe_waits_longer_than_the_readiness_check(kubectl: str) -> None:
    manifests = kustomize(kubectl, DEPLOY)

    timeout = app_container(manifests)["readinessProbe"]["timeoutSeconds"]

    assert timeout > float(settings_of(manifests)["READY_TIMEOUT"])


def test_grace_period_outlasts_the_pre_stop_pause_and_the_drain(kubectl: str) -> None:
    manifests = kustomize(kubectl, DEPLOY)
    pod = app_deployment(manifests)["spec"]["template"]["spec"]
    command = app_container(manifests)["lifecycle"]["preStop"]["exec"]["command"]

    pause = float(command[1]) if command[0] == "sleep" else 0.0
    drain = float(settings_of(manifests)["SHUTDOWN_TIMEOUT"])

    assert command[0] == "sleep"
    assert pause > 0
    assert pod["terminationGracePeriodSeconds"] > pause + drain


def test_settings_come_from_the_config_map_and_the_url_from_a_secret(kubectl: str) -> None:
    manifests = kustomize(kubectl, DEPLOY)
    container = app_container(manifests)
    readable = {name.upper() for name in Settings.model_fields}
    url = environment_of(container)["DATABASE_URL"]

    assert set(settings_of(manifests)) <= readable, "a setting the service does not read"
    assert "DATABASE_URL" not in settings_of(manifests)
    assert settings_of(manifests)["LOG_FORMAT"] == "json"
    assert url["valueFrom"]["secretKeyRef"] == {
        "name": f"{NAME}-database",
        "key": "DATABASE_URL",
    }
    assert {"requests", "limits"} <= set(container["resources"])


def test_migrations_run_from_the_same_image_against_postgresql(kubectl: str) -> None:
    (job,) = kustomize(kubectl, DEPLOY / "migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    app = app_container(kustomize(kubectl, DEPLOY))

    assert container["command"] == ["python", "-m", "alembic", "upgrade", "head"]
    assert container["image"] == app["image"]
    assert [variable["name"] for variable in container["env"]] == ["DATABASE_URL", "LOG_FORMAT"]
    assert container["env"][0] == environment_of(app)["DATABASE_URL"]


def test_pgbouncer_component_routes_the_app_through_pgbouncer(kubectl: str, tmp_path: Path) -> None:
    manifests = render(kubectl, "pgbouncer", tmp_path)
    name = f"{NAME}-pgbouncer"
    pgbouncer = only(manifests, "Deployment", name)
    (container,) = pgbouncer["spec"]["template"]["spec"]["containers"]
    environment = environment_of(container)
    url = environment_of(app_container(manifests))["DATABASE_URL"]
    service = only(manifests, "Service", name)

    assert re.fullmatch(r"edoburu/pgbouncer:v\d+\.\d+\.\d+-p\d+", container["image"])
    assert environment["POOL_MODE"]["value"] == "transaction"
    assert "DATABASE_URL" not in environment
    assert settings_of(manifests)["DB_PGBOUNCER"] == "true"
    assert url["valueFrom"]["secretKeyRef"] == {"name": name, "key": "DATABASE_URL"}
    assert service["spec"]["ports"][0]["port"] == int(environment["LISTEN_PORT"]["value"])


def test_readme_budget_is_the_manifests_budget(kubectl: str, tmp_path: Path) -> None:
    manifests = render(kubectl, "pgbouncer", tmp_path)
    settings = settings_of(manifests)
    hpa = only(manifests, "HorizontalPodAutoscaler")
    surge = app_deployment(manifests)["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    figures = [
        hpa["spec"]["maxReplicas"],
        surge,
        int(settings["WEB_CONCURRENCY"]),
        int(settings["DB_POOL_SIZE"]),
        int(settings["DB_MAX_OVERFLOW"]),
    ]
    pgbouncer = only(manifests, "Deployment", f"{NAME}-pgbouncer")
    (container,) = pgbouncer["spec"]["template"]["spec"]["containers"]
    max_client_conn = environment_of(container)["MAX_CLIENT_CONN"]["value"]
    readme = (PROJECT / "README.md").read_text()

    stated = BUDGET.search(readme)

    assert stated is not None, "README.md gives no connection budget"
    replicas, surge, workers, size, overflow = figures
    assert [int(figure) for figure in stated.groups()] == [
        *figures,
        (replicas + surge) * workers * (size + overflow),
    ]
    assert f"`MAX_CLIENT_CONN` ({max_client_conn})" in readme
