"""Every role's manifests from helm/idis validate against the Kubernetes schemas.

The chart is rendered by tests/helm_render.py (a strict subset of Helm's templates: helm itself
cannot be installed here; that module says what this leaves unchecked) and each manifest is
checked with kubernetes-validate, strictly (an unknown field fails). The ServiceMonitor is a
Prometheus Operator CRD whose schema kubernetes-validate does not carry: its fields are checked
here by hand against the Service it must select.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from helm_render import TemplateError, render_chart

CHART = Path(__file__).resolve().parent.parent / "helm" / "idis"
ROLES = ["top-level", "dr", "secondary", "enterprise", "recursive"]
KUBERNETES = "1.30"  # the oldest release still supported upstream when this was written

# Values an operator sets on top of a role's file: every optional branch of the templates on.
EVERYTHING = {
    "secrets": {
        "federationSecret": "federation-secret-1",
        "adminSecret": "admin-secret-1",
        "holderSecret": "holder-secret-1",
        "databasePassword": "database-password-1",
        "replicationPassword": "replication-password-1",
        "superuserPassword": "superuser-password-1",
        "sealingKey": "c2VhbGluZy1rZXktb2YtMzItYnl0ZXMtZXhhY3RseSE=",
    },
    "prefixes": ["88.100"],
    "dns": {"enabled": True},
    "handle": {"siteKeySecret": "site-key"},
    "federation": {"siteUrl": "http://node.example:8000"},
    "service": {"annotations": {"example.com/x": "y"}},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "extraEnv": {"IDIS_CACHE__MAX_ENTRIES": 100000},
}


def _render(role: str, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return render_chart(CHART, [CHART / "roles" / f"{role}.yaml"], overrides, release=role)


def _validate(manifests: list[dict[str, Any]]) -> None:
    for manifest in manifests:
        if manifest["kind"] == "ServiceMonitor":
            continue
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def _one(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def _node_env(manifests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    deployment = _one(manifests, "Deployment", name)
    return _env(deployment["spec"]["template"]["spec"]["containers"][0])


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("variant", ["role defaults", "every option"])
def test_every_role_renders_manifests_valid_for_kubernetes(role: str, variant: str) -> None:
    manifests = _render(role, EVERYTHING if variant == "every option" else None)
    assert manifests
    _validate(manifests)
    deployment = _one(manifests, "Deployment", role)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert _env(container)["IDIS_ROLE"] == role
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("dcs", ["kubernetes", "etcd"])
def test_a_national_site_runs_its_patroni_member_beside_idis(dcs: str) -> None:
    peers = ["shanghai-patroni.idis.example:5432", "nanjing-patroni.idis.example:5432"]
    manifests = render_chart(
        CHART,
        [CHART / "roles" / "top-level.yaml"],
        {"patroni": {"dcs": dcs, "etcdHosts": ["etcd-bj:2379"], "peers": peers}},
        release="beijing",
    )
    _validate(manifests)
    member = _one(manifests, "StatefulSet", "beijing-patroni")
    claim = member["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    config = _one(manifests, "ConfigMap", "beijing-patroni")["data"]["patroni.yml"]
    assert "scope: idis-national" in config
    assert "nosync: true" in config  # a top-level site is never the synchronous copy
    assert "synchronous_mode_strict: true" in config
    assert ("kubernetes:" in config) == (dcs == "kubernetes")
    assert ("etcd-bj:2379" in config) == (dcs == "etcd")
    # RBAC for Kubernetes as the consensus store, and only then.
    kinds = {m["kind"] for m in manifests}
    assert ({"Role", "RoleBinding"} <= kinds) == (dcs == "kubernetes")
    env = _node_env(manifests, "beijing")
    # Writes through every member (libpq finds the leader), reads from this site's own first.
    assert env["IDIS_DATABASE_URL"].endswith(
        ",".join(peers) + "/idis?target_session_attrs=read-write"
    )
    assert env["IDIS_DATABASE_READ_URL"].startswith(
        "postgresql://idis:$(IDIS_DATABASE_PASSWORD)@beijing-patroni:5432,"
    )


def test_dr_sites_are_synchronous_standbys() -> None:
    config = _one(_render("dr"), "ConfigMap", "dr-patroni")["data"]["patroni.yml"]
    assert "nosync: false" in config
    assert "scope: idis-national" in config


def test_migration_runs_as_a_hook_job_and_the_pods_then_do_not_migrate() -> None:
    manifests = _render("secondary", {"prefixes": ["88.100"]})
    job = _one(manifests, "Job", "secondary-migrate")
    assert "pre-upgrade" in job["metadata"]["annotations"]["helm.sh/hook"]
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "idis migrate" in script
    assert "idis prefix init 88.100 --secret-file /secrets/admin-secret" in script
    # The node's Service must not route to the Job's pod.
    service = _one(manifests, "Service", "secondary")
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not set(service["spec"]["selector"].items()) <= set(labels.items())
    env = _node_env(manifests, "secondary")
    assert env["IDIS_MIGRATE_ON_START"] == "false"
    recursive = _render("recursive")
    assert not [m for m in recursive if m["kind"] == "Job"]
    env = _node_env(recursive, "recursive")
    assert env["IDIS_MIGRATE_ON_START"] == "true"


def test_redis_only_where_the_role_uses_it() -> None:
    assert _one(_render("secondary"), "Deployment", "secondary-redis")
    assert not [m for m in _render("enterprise") if m["metadata"]["name"].endswith("-redis")]
    external = _render("top-level", {"redis": {"url": "redis://cache.example:6379/2"}})
    assert not [m for m in external if m["metadata"]["name"].endswith("-redis")]


def test_native_handle_and_dns_ports_on_the_service() -> None:
    service = _one(_render("top-level", {"dns": {"enabled": True}}), "Service", "top-level")
    ports = {(p["name"], p["port"], p["protocol"]) for p in service["spec"]["ports"]}
    assert {
        ("handle-tcp", 2641, "TCP"),
        ("handle-udp", 2641, "UDP"),
        ("dns-udp", 53, "UDP"),
        ("dns-tcp", 53, "TCP"),
    } <= ports
    off = _one(_render("top-level", {"handle": {"enabled": False}}), "Deployment", "top-level")
    assert _env(off["spec"]["template"]["spec"]["containers"][0])["IDIS_HANDLE"] == ""


def test_the_service_monitor_selects_the_nodes_service_and_its_metrics_port() -> None:
    manifests = _render("secondary")
    monitor = _one(manifests, "ServiceMonitor", "secondary")
    service = _one(manifests, "Service", "secondary")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    wanted = monitor["spec"]["selector"]["matchLabels"]
    assert set(wanted.items()) <= set(service["metadata"]["labels"].items())
    # ... and only that Service: Redis's and Patroni's do not carry the node's labels.
    others = [m for m in manifests if m["kind"] == "Service" and m is not service]
    assert others and not [
        s for s in others if set(wanted.items()) <= set(s["metadata"]["labels"].items())
    ]
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_credentials_come_from_a_secret_never_from_plain_values_in_pods() -> None:
    manifests = _render("top-level", EVERYTHING)
    secret = _one(manifests, "Secret", "top-level-credentials")
    assert secret["stringData"]["federation-secret"] == "federation-secret-1"
    text = str([m for m in manifests if m["kind"] != "Secret"])
    for value in EVERYTHING["secrets"].values():
        assert value not in text
    mine = _render("top-level", {"secrets": {"existingSecret": "national-credentials"}})
    assert not [m for m in mine if m["kind"] == "Secret"]
    assert "national-credentials" in str(_one(mine, "Deployment", "top-level"))


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: x\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("a: 1\n")
    (chart / "templates" / "x.yaml").write_text("a: {{ .Values.a | b64enc }}\n")
    with pytest.raises(TemplateError, match="b64enc"):
        render_chart(chart)
    (chart / "templates" / "x.yaml").write_text("a: {{ .Values.missing }}\n")
    with pytest.raises(TemplateError, match="missing"):
        render_chart(chart)


def test_idis_pods_never_see_the_postgresql_superuser_or_replication_passwords() -> None:
    manifests = _render("top-level", EVERYTHING)
    for kind, name in (("Deployment", "top-level"), ("Job", "top-level-migrate")):
        pod = _one(manifests, kind, name)["spec"]["template"]["spec"]
        text = str(pod)
        assert "superuser-password" not in text and "replication-password" not in text
        volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
        assert {item["key"] for item in volume["secret"]["items"]} == {
            "admin-secret",
            "holder-secret",
            "sealing-key",
        }


def test_the_example_site_across_cities_renders_valid_manifests() -> None:
    manifests = render_chart(
        CHART,
        [CHART / "roles" / "dr.yaml", CHART / "examples" / "nanjing.yaml"],
        release="nanjing",
    )
    _validate(manifests)
    config = _one(manifests, "ConfigMap", "nanjing-patroni")["data"]["patroni.yml"]
    assert "etcd3:" in config and "etcd.wuhan.idis.example:2379" in config
    assert "ttl: 30" in config and "nosync: false" in config
    env = _node_env(manifests, "nanjing")
    assert (
        "pg.guiyang.idis.example:5432/idis?target_session_attrs=read-write"
        in (env["IDIS_DATABASE_URL"])
    )
    member = _one(manifests, "StatefulSet", "nanjing-patroni")["spec"]["template"]["spec"]
    member_env = {e["name"]: e.get("value") for e in member["containers"][0]["env"]}
    assert member_env["PATRONI_POSTGRESQL_CONNECT_ADDRESS"] == "pg.nanjing.idis.example:5432"
    assert not [m for m in manifests if m["kind"] == "Secret"]  # the operator's own


def test_every_pod_seals_secrets_with_the_releases_key() -> None:
    """Secrets are sealed with a key outside the database: every pod (and the migration Job that
    sets the first secrets) must read the same one from the Secret, never make its own in a
    scratch volume that dies with the pod."""
    manifests = _render("secondary", EVERYTHING)
    secret = _one(manifests, "Secret", "secondary-credentials")
    assert secret["data"]["sealing-key"] == EVERYTHING["secrets"]["sealingKey"]
    pods = [_one(manifests, "Deployment", "secondary"), _one(manifests, "Job", "secondary-migrate")]
    for pod in pods:
        spec = pod["spec"]["template"]["spec"]
        [container] = spec["containers"]
        assert _env(container)["IDIS_SECRET_KEY_FILE"] == "/secrets/sealing-key"
        [volume] = [v for v in spec["volumes"] if v["name"] == "secrets"]
        assert {"key": "sealing-key", "path": "sealing-key"} in volume["secret"]["items"]
