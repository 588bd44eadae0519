"""The Helm chart: lint, render and validate every profile, then check what it renders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.dashboards.generate import rendered as generated_dashboards
from services.catalog import SERVICES, service_class
from services.runtime.server import LIVENESS_SERVICE
from tests.deploy.tooling import (
    CHART,
    KUBERNETES_VERSION,
    PROFILES,
    RELEASE,
    documents,
    helm_args,
    profile_values,
    render,
    renderable_chart,
    run,
    tool,
)

# Custom resources kubernetes-validate has no schema for (checked by the tests below instead).
CUSTOM_KINDS = {"ServiceMonitor"}


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return renderable_chart(tmp_path_factory.mktemp("chart"))


@pytest.fixture(scope="module")
def manifests(chart: Path) -> dict[str, list[dict[str, Any]]]:
    rendered = {}
    for profile in PROFILES:
        done = render(chart, profile)
        assert done.returncode == 0, done.stderr
        rendered[profile] = documents(done.stdout)
    return rendered


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def service_object(docs: list[dict[str, Any]], kind: str, service: str) -> dict[str, Any]:
    return objects(docs, kind)[f"{RELEASE}-rosemesh-{service}"]


def workloads(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Deployments and StatefulSets (the embedded experience pool runs as one)."""
    return objects(docs, "Deployment") | objects(docs, "StatefulSet")


def workload(docs: list[dict[str, Any]], service: str) -> dict[str, Any]:
    return workloads(docs)[f"{RELEASE}-rosemesh-{service}"]


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_qdrant_is_the_official_chart_behind_a_condition() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    (qdrant,) = chart["dependencies"]
    assert qdrant["name"] == "qdrant"
    assert qdrant["repository"] == "https://qdrant.github.io/qdrant-helm"
    assert qdrant["condition"] == "qdrant.enabled"
    production = profile_values("values-production.yaml")["qdrant"]
    assert production["enabled"] and production["replicaCount"] >= 3
    assert production["config"]["cluster"]["enabled"]
    assert production["config"]["storage"]["collection"]["replication_factor"] >= 2


@pytest.mark.parametrize("profile", PROFILES)
def test_helm_lint_strict(chart: Path, profile: str) -> None:
    done = run([tool("helm"), "lint", "--strict", *helm_args(chart, profile)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("profile", PROFILES)
def test_rendered_manifests_pass_kubernetes_validate_strict(chart: Path, profile: str) -> None:
    manifest = render(chart, profile)
    assert manifest.returncode == 0, manifest.stderr
    validator = tool("kubernetes-validate")
    done = run([validator, "--strict", "-k", KUBERNETES_VERSION, "-"], stdin=manifest.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    docs = documents(manifest.stdout)
    validated = [d for d in docs if d["kind"] not in CUSTOM_KINDS]
    assert done.stdout.count(" passed for resource ") == len(validated)
    assert "Deployment" in {d["kind"] for d in validated}


@pytest.mark.parametrize("profile", PROFILES)
def test_every_deployment_has_health_probes_resources_and_a_locked_down_security_context(
    manifests: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    deployments = workloads(manifests[profile])
    values = profile_values(profile)
    expected = {f"{RELEASE}-rosemesh-{name}" for name, spec in values["services"].items() if spec["enabled"]}
    if values["triton"]["enabled"]:
        expected.add(f"{RELEASE}-rosemesh-triton")
    assert set(deployments) == expected
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"], name
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"], name
        assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"], name
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if name.endswith("-triton"):  # Triton's own KServe v2 health endpoints
                assert container[probe]["httpGet"]["path"].startswith("/v2/health/"), (name, probe)
            else:  # grpc.health.v1 on the service's gRPC port: alive while loading, ready once loaded
                grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
                assert container[probe]["grpc"]["port"] == grpc_port, (name, probe)
                expected = "" if probe == "readinessProbe" else LIVENESS_SERVICE
                assert container[probe]["grpc"].get("service", "") == expected, (name, probe)
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, name  # a writable /tmp despite the read-only root


@pytest.mark.parametrize("profile", PROFILES)
def test_each_service_has_its_service_account_ports_disruption_budget_and_autoscaler(
    manifests: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    docs = manifests[profile]
    for name, spec in profile_values(profile)["services"].items():
        deployment = workload(docs, name)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == service_object(docs, "ServiceAccount", name)["metadata"]["name"]
        assert pod["containers"][0]["args"] == ["serve", name]
        assert name in SERVICES
        ports = {p["name"]: p["port"] for p in service_object(docs, "Service", name)["spec"]["ports"]}
        http = {"http": spec["httpPort"]} if "httpPort" in spec else {}
        assert ports == {"grpc": spec["port"], "metrics": spec["metricsPort"], **http}
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert service_object(docs, "Service", name)["spec"]["selector"] == selector
        assert service_object(docs, "PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"] == selector
        autoscalers = objects(docs, "HorizontalPodAutoscaler")
        if spec["autoscaling"]["enabled"]:
            hpa = autoscalers[f"{RELEASE}-rosemesh-{name}"]["spec"]
            assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
            assert hpa["minReplicas"] == spec["autoscaling"]["minReplicas"] >= 2
            assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
        else:
            assert deployment["spec"]["replicas"] == spec["replicas"]


@pytest.mark.parametrize("profile", PROFILES)
def test_configuration_reaches_real_settings_of_each_service(
    manifests: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    """Every ROSEMESH_<SERVICE>_<SETTING> the chart sets names a field of that service's settings."""
    docs = manifests[profile]
    for name, spec in profile_values(profile)["services"].items():
        fields = service_class(name).settings_class.model_fields
        assert set(spec["config"]) | set(spec["secretConfig"]) <= set(fields), name
        prefix = f"ROSEMESH_{name.upper()}_"
        config = service_object(docs, "ConfigMap", name)["data"]
        secret = service_object(docs, "Secret", name).get("data") or {}
        for key in [*config, *secret]:
            assert key.startswith(prefix) and key.removeprefix(prefix).lower() in fields, key
        assert config[prefix + "HOST"] == "0.0.0.0"
        assert config[prefix + "PORT"] == str(spec["port"])
        assert config[prefix + "METRICS_PORT"] == str(spec["metricsPort"])
        for key, value in spec["config"].items():
            assert yaml.safe_load(config[prefix + key.upper()]) == value
        sources = workload(docs, name)["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {"configMapRef": {"name": f"{RELEASE}-rosemesh-{name}"}} in sources


def test_local_profile_runs_embedded_defaults_on_the_cpu(manifests: dict[str, list[dict[str, Any]]]) -> None:
    docs = manifests["values-local.yaml"]
    experience = service_object(docs, "ConfigMap", "experience")["data"]
    assert "ROSEMESH_EXPERIENCE_STORAGE" not in experience  # the embedded Qdrant engine
    assert experience["ROSEMESH_EXPERIENCE_EMBEDDING_TARGET"] == f"dns:///{RELEASE}-rosemesh-embedding:50051"
    assert "ROSEMESH_EMBEDDING_BACKEND" not in service_object(docs, "ConfigMap", "embedding")["data"]
    assert not objects(docs, "HorizontalPodAutoscaler") and not objects(docs, "NetworkPolicy")
    for deployment in objects(docs, "Deployment").values():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        metrics_port = next(
            p["containerPort"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
            if p["name"] == "metrics"
        )
        assert annotations["prometheus.io/port"] == str(metrics_port)
        assert "nvidia.com/gpu" not in json.dumps(deployment)


def test_production_profile_wires_triton_on_gpus_qdrant_otlp_and_the_service_monitor(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    docs = manifests["values-production.yaml"]
    values = profile_values("values-production.yaml")
    triton = objects(docs, "Deployment")[f"{RELEASE}-rosemesh-triton"]
    container = triton["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == values["triton"]["gpus"] >= 1
    assert triton["spec"]["replicas"] == values["triton"]["replicas"] >= 2
    models = next(m for m in container["volumeMounts"] if m["name"] == "models")
    assert models["mountPath"] == "/models" and models["readOnly"]
    assert "--model-repository=/models" in container["args"]
    triton_grpc = {p["name"]: p["port"] for p in objects(docs, "Service")[f"{RELEASE}-rosemesh-triton"]["spec"]["ports"]}
    for name in ("embedding", "earlyexit"):
        config = service_object(docs, "ConfigMap", name)["data"]
        prefix = f"ROSEMESH_{name.upper()}_"
        assert config[prefix + "BACKEND"] == "triton"
        assert config[prefix + "TRITON_URL"] == f"{RELEASE}-rosemesh-triton:{triton_grpc['grpc']}"

    experience = service_object(docs, "ConfigMap", "experience")["data"]
    assert experience["ROSEMESH_EXPERIENCE_STORAGE"] == "qdrant"
    assert experience["ROSEMESH_EXPERIENCE_QDRANT_URL"] == f"http://{RELEASE}-qdrant:6333"

    for name in SERVICES:
        env = env_of(service_object(docs, "Deployment", name))
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == values["otel"]["endpoint"]
        assert "deployment.environment=production" in env["OTEL_RESOURCE_ATTRIBUTES"]

    (monitor,) = objects(docs, "ServiceMonitor").values()
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selected = [
        s for s in objects(docs, "Service").values()
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert len(selected) == len(SERVICES) + 1  # every service and Triton
    assert all("metrics" in {p["name"] for p in s["spec"]["ports"]} for s in selected)
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_network_policy_admits_the_mesh_ingress_monitoring_and_limits_egress(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    docs = manifests["values-production.yaml"]
    values = profile_values("values-production.yaml")
    (policy,) = objects(docs, "NetworkPolicy").values()
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    mesh_out, dns, *listed = spec["egress"]
    assert mesh_out == {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE}}}]}
    assert {p["port"] for p in dns["ports"]} == {53}
    assert listed == values["networkPolicy"]["egressTo"] and listed
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/instance": RELEASE}
    mesh, ingress, monitoring = spec["ingress"]
    assert mesh == {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE}}}]}
    assert ingress["from"] == values["networkPolicy"]["ingressFrom"]
    served = {s["port"] for s in values["services"].values()} | {s["httpPort"] for s in values["services"].values() if "httpPort" in s}
    assert {p["port"] for p in ingress["ports"]} == served
    assert monitoring["from"] == values["networkPolicy"]["metricsFrom"]
    assert {p["port"] for p in monitoring["ports"]} == {s["metricsPort"] for s in values["services"].values()} | {8002}


@pytest.mark.parametrize("profile", PROFILES)
def test_grafana_dashboards_ship_as_labelled_config_maps(
    manifests: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    shipped = {}
    for config_map in objects(manifests[profile], "ConfigMap").values():
        if config_map["metadata"]["labels"].get("grafana_dashboard") == "1":
            shipped.update(config_map["data"])
    assert shipped.keys() == generated_dashboards().keys()
    for name, text in generated_dashboards().items():
        assert json.loads(shipped[name]) == json.loads(text)


def test_committed_dashboards_match_the_generator() -> None:
    for name, text in generated_dashboards().items():
        assert (CHART / "dashboards" / name).read_text() == text, f"{name} is stale: run `make dashboards`"


def test_experience_on_the_embedded_engine_refuses_more_than_one_replica(chart: Path) -> None:
    done = render(chart, "values-local.yaml", "--set", "services.experience.replicas=3")
    assert done.returncode != 0
    assert "embedded Qdrant engine serves one replica" in done.stderr


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [("services.embedding.port=0", "/services/embedding/port"), ("triton.gpus=-1", "/triton/gpus")],
)
def test_the_values_schema_rejects_bad_values(chart: Path, setting: str, complaint: str) -> None:
    done = run([tool("helm"), "lint", "--strict", *helm_args(chart, "values-local.yaml"), "--set", setting])
    assert done.returncode != 0
    assert complaint in done.stdout + done.stderr


@pytest.mark.parametrize("profile", PROFILES)
def test_grpc_services_are_headless_so_clients_spread_over_pods(
    manifests: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    for name in SERVICES:
        if f"{RELEASE}-rosemesh-{name}" not in objects(manifests[profile], "Service"):
            continue
        service = service_object(manifests[profile], "Service", name)
        assert service["spec"]["clusterIP"] == "None", f"{profile}: {name}"


def mounts_and_volumes(deployment: dict[str, Any]) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    return mounts, {v["name"]: v for v in pod["volumes"]}


def test_production_turns_auth_and_tls_on_and_mounts_them_where_the_settings_point(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    docs = manifests["values-production.yaml"]
    security = profile_values("values-production.yaml")["security"]
    assert security["auth"]["enabled"] and security["tls"]["enabled"]
    for name in profile_values("values-production.yaml")["services"]:
        prefix = f"ROSEMESH_{name.upper()}_"
        config = service_object(docs, "ConfigMap", name)["data"]
        mounts, volumes = mounts_and_volumes(workload(docs, name))
        tokens = volumes["tenant-tokens"]["secret"]
        assert tokens["secretName"] == security["auth"]["existingSecret"]
        (item,) = tokens["items"]
        assert config[prefix + "AUTH_TOKENS_FILE"] == f"{mounts['tenant-tokens']}/{item['path']}"
        assert volumes["tls"]["secret"]["secretName"] == security["tls"]["existingSecret"]
        for setting, key in (("TLS_CERT_FILE", "tls.crt"), ("TLS_KEY_FILE", "tls.key"), ("TLS_CA_FILE", "ca.crt")):
            assert config[prefix + setting] == f"{mounts['tls']}/{key}", (name, setting)
        env = workload(docs, name)["spec"]["template"]["spec"]["containers"][0]["env"]
        outbound = next(e for e in env if e["name"] == prefix + "OUTBOUND_TOKEN")
        assert outbound["valueFrom"]["secretKeyRef"]["name"] == security["auth"]["existingSecret"]


@pytest.mark.parametrize("profile", PROFILES)
def test_without_security_nothing_is_mounted_or_wired(manifests: dict[str, list[dict[str, Any]]], profile: str) -> None:
    if profile_values(profile)["security"]["auth"]["enabled"]:
        pytest.skip("this profile turns security on")
    for name in profile_values(profile)["services"]:
        config = service_object(manifests[profile], "ConfigMap", name)["data"]
        assert not {k for k in config if k.endswith(("_AUTH_TOKENS_FILE", "_TLS_CERT_FILE"))}
        mounts, _ = mounts_and_volumes(workload(manifests[profile], name))
        assert "tenant-tokens" not in mounts and "tls" not in mounts


def test_production_qdrant_key_comes_from_a_secret_and_the_judge_over_https(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    docs = manifests["values-production.yaml"]
    env = workload(docs, "experience")["spec"]["template"]["spec"]["containers"][0]["env"]
    key = next(e for e in env if e["name"] == "ROSEMESH_EXPERIENCE_QDRANT_API_KEY")
    assert key["valueFrom"]["secretKeyRef"] == {"name": f"{RELEASE}-qdrant-apikey", "key": "api-key"}
    assert "ROSEMESH_EXPERIENCE_QDRANT_API_KEY" not in (service_object(docs, "Secret", "experience").get("data") or {})
    critique = service_object(docs, "ConfigMap", "critique")["data"]
    assert critique["ROSEMESH_CRITIQUE_JUDGE_ENDPOINT"].startswith("https://")
    assert not [key for key, value in critique.items() if value.startswith("http://")]


def test_the_embedded_pool_runs_as_a_stateful_set_with_a_volume_claim(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    docs = manifests["values-local.yaml"]
    pool = service_object(docs, "StatefulSet", "experience")
    (claim,) = pool["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "pool" and claim["spec"]["resources"]["requests"]["storage"]
    mounts, volumes = mounts_and_volumes(pool)
    assert mounts["pool"] == "/var/lib/rosemesh/experience" and "pool" not in volumes
    assert pool["spec"]["serviceName"] == service_object(docs, "Service", "experience")["metadata"]["name"]
    assert f"{RELEASE}-rosemesh-experience" not in objects(docs, "Deployment")


@pytest.mark.parametrize("profile", PROFILES)
def test_a_training_job_fills_the_model_cache_where_services_do_not_train(
    manifests: dict[str, list[dict[str, Any]]], profile: str
) -> None:
    jobs = objects(manifests[profile], "Job")
    for name in ("earlyexit", "multilabel"):
        trains_itself = profile_values(profile)["services"][name]["config"].get("train_default", True)
        job = jobs.get(f"{RELEASE}-rosemesh-{name}-train")
        assert (job is None) == trains_itself, (profile, name)
        if job is not None:
            container = job["spec"]["template"]["spec"]["containers"][0]
            assert container["args"][:2] == ["train", name]
            assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/var/cache/rosemesh", "/tmp"}
            volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
            cache = {k: v for k, v in profile_values(profile)["modelCache"].items() if v is not None}
            assert volumes["model-cache"] == {"name": "model-cache", **cache}  # what the services mount
            # The Job calls the mesh as the service would: the same token, certificates and files.
            service_pod = workload(manifests[profile], name)["spec"]["template"]["spec"]
            served = service_pod["containers"][0]
            assert [e for e in served["env"] if "OUTBOUND_TOKEN" in e["name"]] == container.get("env", [])
            security_mounts = [m for m in served["volumeMounts"] if m["mountPath"].startswith("/etc/rosemesh/")]
            assert security_mounts == [m for m in container["volumeMounts"] if m["mountPath"].startswith("/etc/rosemesh/")]
            assert all(volumes[m["name"]] in service_pod["volumes"] for m in security_mounts)
            if profile_values(profile)["security"]["auth"]["enabled"]:
                assert container["env"] and security_mounts


def test_production_triton_renders_its_repository_from_the_model_cache(
    manifests: dict[str, list[dict[str, Any]]],
) -> None:
    docs = manifests["values-production.yaml"]
    pod = objects(docs, "Deployment")[f"{RELEASE}-rosemesh-triton"]["spec"]["template"]["spec"]
    (render,) = pod["initContainers"]
    assert render["args"][:2] == ["triton", "render"] and "--wait-s" in render["args"]
    rosemesh_image = workload(docs, "embedding")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert render["image"] == rosemesh_image  # the services' image renders, Triton's image serves
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"] == {"name": "models", "emptyDir": {}}
    cache = {k: v for k, v in profile_values("values-production.yaml")["modelCache"].items() if v is not None}
    assert volumes["model-cache"] == {"name": "model-cache", **cache}  # the cache the training Jobs fill
    out = render["args"][render["args"].index("--out") + 1]
    assert {m["name"]: m["mountPath"] for m in render["volumeMounts"]}["models"] == out
    assert {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}["models"] == "/models"


def test_pinned_model_versions_reach_the_settings_as_a_mapping(chart: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = "values-production.yaml"
    pins = {"toxicity": "20261201T120000-abc123"}
    done = render(chart, profile, "--set-json", f"services.multilabel.config.model_versions={json.dumps(pins)}")
    config = service_object(documents(done.stdout), "ConfigMap", "multilabel")["data"]
    settings_class = service_class("multilabel").settings_class
    monkeypatch.setenv("ROSEMESH_MULTILABEL_MODEL_VERSIONS", config["ROSEMESH_MULTILABEL_MODEL_VERSIONS"])
    assert settings_class().model_versions == pins
