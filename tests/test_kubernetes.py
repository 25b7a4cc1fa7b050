"""The Kubernetes manifests (deploy/kubernetes/): valid against the Kubernetes schemas (offline,
kubernetes-validate's bundled schemas, strict: no unknown fields), wired together (names,
ports, labels), and running the very command and configuration the compose tests prove."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from peerplane_cli import config

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"  # a version current clusters run; the schemas ship with the package


def documents() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in documents() if d["kind"] == kind]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in by_kind(kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, found)
    return found[0]


def container() -> dict[str, Any]:
    (c,) = one("StatefulSet")["spec"]["template"]["spec"]["containers"]
    return c


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.mark.parametrize(("path", "doc"), documents(),
                         ids=[f"{p.name}:{d['kind']}/{d['metadata']['name']}"
                              for p, d in documents()])
def test_every_manifest_validates_against_the_kubernetes_schema(path: Path, doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    broken = one("StatefulSet")
    broken = {**broken, "spec": {**broken["spec"], "replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    typo = {**broken, "spec": {**one("StatefulSet")["spec"], "servicName": "x"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


def test_the_deployment_has_every_part() -> None:
    kinds = sorted(d["kind"] for _, d in documents())
    assert kinds == ["ConfigMap", "PodDisruptionBudget", "Secret", "Service", "Service",
                     "Service", "StatefulSet"]


def site_file(tmp_path: Path) -> str:
    path = tmp_path / "site.hcl"
    path.write_text(one("ConfigMap")["data"]["site.hcl"])
    return str(path)


def test_raft_discovery_goes_through_the_headless_service(tmp_path: Path) -> None:
    sts = one("StatefulSet")
    headless = one("Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True  # names before quorum
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    # retry_join names every pod by its stable DNS name, and each pod advertises that name.
    values = config.resolve(None, {}, [site_file(tmp_path)]).values
    names = [f"{sts['metadata']['name']}-{i}.{headless['metadata']['name']}"
             for i in range(sts["spec"]["replicas"])]
    assert values["join"] == names
    env = {e["name"]: e for e in container()["env"]}
    assert env["PEERPLANE_NODE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["PEERPLANE_ADVERTISE"]["value"] == \
        f"$(PEERPLANE_NODE).{headless['metadata']['name']}"


def test_the_pod_disruption_budget_keeps_a_quorum() -> None:
    replicas = one("StatefulSet")["spec"]["replicas"]
    assert replicas == 3
    assert one("PodDisruptionBudget")["spec"]["minAvailable"] == replicas // 2 + 1


def test_services_select_the_servers_and_expose_api_and_peering() -> None:
    labels = one("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    for svc in by_kind("Service"):
        assert svc["spec"]["selector"].items() <= labels.items()
        for p in svc["spec"]["ports"]:
            assert ports[p["targetPort"]] == p["port"], (svc["metadata"]["name"], p)
    assert [p["name"] for p in one("Service", "peerplane-api")["spec"]["ports"]] == ["http"]
    peering = one("Service", "peerplane-peering")
    assert [p["name"] for p in peering["spec"]["ports"]] == ["peering"]
    assert peering["spec"]["type"] == "LoadBalancer"


def test_readiness_is_the_http_port_and_data_is_a_volume_claim() -> None:
    c = container()
    probe = c["readinessProbe"]["httpGet"]
    assert (probe["port"], probe["path"]) == ("http", "/v1/status/peers")
    server = config.read_file(str(ROOT / "deploy" / "config" / "server.hcl"))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert (ports["http"], ports["raft"], ports["peering"]) == \
        (server["http_port"], server["raft_port"], server["peering_port"])
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    claims = [t["metadata"]["name"] for t in one("StatefulSet")["spec"]["volumeClaimTemplates"]]
    assert claims == ["data"] and mounts["data"] == server["data_dir"]


def test_the_cluster_secret_comes_from_the_secret_where_the_config_reads_it() -> None:
    server = config.read_file(str(ROOT / "deploy" / "config" / "server.hcl"))
    directory, _, key = server["cluster_secret_file"].rpartition("/")
    volumes = {v["name"]: v for v in one("StatefulSet")["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in container()["volumeMounts"] if m["mountPath"] == directory)
    secret = one("Secret", volumes[mount["name"]]["secret"]["secretName"])
    assert list(secret["stringData"]) == [key]
    assert secret["stringData"][key] == ""  # no usable default: an agent refuses to start


def test_kubernetes_and_compose_run_the_same_command_and_image_config() -> None:
    """One source of truth: the command is the image's, the shared settings are the image's
    /etc/peerplane/server.hcl (deploy/config/server.hcl), the site file sits beside it."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    cmd = re.search(r'^CMD (\[.*\])$', dockerfile, re.M)
    assert cmd is not None
    image_cmd = yaml.safe_load(cmd.group(1))
    assert "COPY config/server.hcl /etc/peerplane/server.hcl" in dockerfile
    assert container()["args"] == image_cmd == ["agent", "--config-dir=/etc/peerplane"]
    services = compose()["services"]
    assert len(services) == 6
    for name, svc in services.items():
        assert svc["command"] == image_cmd, name
        assert svc["image"] == container()["image"], name
        site = [v for v in svc["volumes"] if v.endswith(":/etc/peerplane/site.hcl:ro")]
        assert site == [f"./deploy/config/{name[:3]}.hcl:/etc/peerplane/site.hcl:ro"], name
    site_mount = next(m for m in container()["volumeMounts"] if m["name"] == "site")
    assert (site_mount["mountPath"], site_mount["subPath"]) == \
        ("/etc/peerplane/site.hcl", "site.hcl")


def test_every_site_configuration_validates_with_the_shared_file(tmp_path: Path) -> None:
    server = str(ROOT / "deploy" / "config" / "server.hcl")
    for site in (ROOT / "deploy" / "config").glob("dc*.hcl"):
        config.validate([server, str(site)])
    config.validate([server, site_file(tmp_path)])
