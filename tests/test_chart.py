"""The Helm chart (helm/braze-exporter), rendered offline with Helm's own engine.

Every scenario (the defaults, and each values file in tests/chart/) is rendered once per
module. Its objects are checked against the Kubernetes API schemas and the Prometheus
Operator CRDs, its config by the exporter's own --check-config (with the key files laid out
as the kubelet would mount them), and its alert rules by promtool. The values schema and the
templates must reject mistakes with a message naming the value to fix.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import trustme
import yaml
from helm_python.chart import Chart, lint, values_from_yaml
from helm_python.errors import HelmError, HelmRenderError, HelmValuesError
from kubernetes_validate.utils import latest_version

from exporter.config import INSTANCE_URLS
from exporter.kpis import SUPPORTED_KPIS
from tests.conftest import REPO, required_tool

CHART = REPO / "helm" / "braze-exporter"
SCENARIO_DIR = REPO / "tests" / "chart"
RULES_FILE = CHART / "files" / "braze-exporter.rules.yml"
DASHBOARD_FILE = CHART / "files" / "braze-exporter.dashboard.json"
CRD_DIR = REPO / "tests" / "crds"  # the operator's own CRDs, see tests/crds/README.md
BRAZE_EXPORTER = Path(sys.executable).parent / "braze-exporter"

RELEASE = "rel"
NAMESPACE = "monitoring"
FULLNAME = "rel-braze-exporter"
PORT = 9877
WEB_DIR = PurePosixPath("/etc/braze-exporter/web")  # the web config and the files it names
KEY = "00000000-0000-4000-8000-000000000001"  # a well-formed key: Braze REST API keys are UUIDs
SCENARIOS = ["default", *sorted(path.stem for path in SCENARIO_DIR.glob("*.yaml"))]
THRESHOLD_RECORDS = {  # prometheusRule.thresholds.* -> the recording rule it sets
    "weeklyDropRatio": "braze:monthly_active_users_weekly_drop:threshold_ratio",
    "dailyDropRatio": "braze:monthly_active_users_daily_drop:threshold_ratio",
    "dauWeeklyDropRatio": "braze:daily_active_users_weekly_drop:threshold_ratio",
    "newUsersWeeklyDropRatio": "braze:daily_new_users_weekly_drop:threshold_ratio",
    "uninstallsWeeklySpikeRatio": "braze:daily_uninstalls_weekly_spike:threshold_ratio",
    "uninstallsSpikeMinCount": "braze:daily_uninstalls_spike:threshold_min_count",
    "hourlySessionsDropRatio": "braze:hourly_sessions_drop:threshold_ratio",
    "hourlySessionsDropMinCount": "braze:hourly_sessions_drop:threshold_min_count",
    "staleAfterHours": "braze:kpi_point_stale:threshold_hours",
    "hourlyStaleAfterHours": "braze:hourly_kpi_point_stale:threshold_hours",
}


@dataclass(frozen=True)
class Web:
    """What a release's webConfig values ask of the exporter's HTTP server, worked out here
    rather than read from the templates."""

    values: dict[str, Any]  # the effective webConfig

    @property
    def tls(self) -> bool:
        return bool(self.values["tls"]["enabled"])

    @property
    def existing_secret(self) -> str:
        return str(self.values["existingSecret"])

    @property
    def chart_made(self) -> bool:
        asked = self.tls or self.values["basicAuthUsers"] or self.values["headers"]
        return not self.existing_secret and bool(asked)

    @property
    def enabled(self) -> bool:
        return bool(self.existing_secret) or self.chart_made

    @property
    def client_cert_required(self) -> bool:
        return self.tls and self.values["tls"]["clientAuthType"] == "RequireAndVerifyClientCert"

    @property
    def port_name(self) -> str:
        return "https-metrics" if self.tls else "http-metrics"


def chart_metadata() -> dict[str, Any]:
    metadata: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return metadata


MIN_KUBE_VERSION = "1.25.0"  # Chart.yaml's kubeVersion
KUBE_VERSIONS = [MIN_KUBE_VERSION, latest_version()]  # and the newest kubernetes-validate ships


@dataclass(frozen=True)
class Rendered:
    """One rendered release: the effective values, the manifests and their objects."""

    values: dict[str, Any]  # the chart's defaults merged with the scenario's values
    manifests: dict[str, str]  # template path -> rendered text

    @cached_property
    def objects(self) -> list[dict[str, Any]]:
        return [
            document
            for path, text in self.manifests.items()
            if path.endswith(".yaml")
            for document in yaml.safe_load_all(text)
            if document
        ]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.all(kind) if name in (None, o["metadata"]["name"])]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    @property
    def fullname(self) -> str:
        """The name of the release's objects (fullnameOverride, else <release>-braze-exporter)."""
        name: str = self.one("Deployment")["metadata"]["name"]
        return name

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.one("Deployment")["spec"]["template"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        containers: list[dict[str, Any]] = self.pod["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]

    @property
    def config_map(self) -> dict[str, Any]:
        return self.one("ConfigMap", self.fullname)

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = yaml.safe_load(self.config_map["data"]["config.yaml"])
        return config

    @property
    def web(self) -> Web:
        return Web(self.values["webConfig"])

    @property
    def notes(self) -> str:
        return self.manifests[f"{CHART.name}/templates/NOTES.txt"]


@pytest.fixture(scope="module")
def chart() -> Iterator[Chart]:
    with Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Chart, values: dict[str, Any]) -> Rendered:
    manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    return Rendered(chart.merge_values(values), manifests)


def scenario_values(name: str) -> dict[str, Any]:
    if name == "default":
        return {}
    return values_from_yaml((SCENARIO_DIR / f"{name}.yaml").read_text())


@pytest.fixture(scope="module", params=SCENARIOS)
def scenario(request: pytest.FixtureRequest, chart: Chart) -> Rendered:
    return render(chart, scenario_values(request.param))


@pytest.fixture(scope="module")
def default(chart: Chart) -> Rendered:
    return render(chart, {})


def with_value(path: str, value: object) -> dict[str, Any]:
    """Values setting one dotted path, e.g. with_value("config.poll.interval", "5m")."""
    *parents, leaf = path.split(".")
    values: dict[str, Any] = {leaf: value}
    for parent in reversed(parents):
        values = {parent: values}
    return values


def rules_file_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return groups


def rule_id(rule: dict[str, Any]) -> str:
    return str(rule.get("alert") or rule["record"])


# --- lint and render ---------------------------------------------------------------------


def test_scenarios_cover_the_main_set_ups() -> None:
    assert {
        "default",
        "existing-secret",
        "chart-made-keys",
        "mixed-keys",
        "monitoring-off",
        "overrides",
        "web-tls",
        "web-basic-auth",
        "web-tls-basic-auth",
        "web-mtls",
        "web-existing-secret",
    } <= set(SCENARIOS)


@pytest.mark.parametrize("name", SCENARIOS)
def test_lint_is_clean(name: str) -> None:
    report = lint(CHART, values=scenario_values(name), strict=True)
    assert report["errors"] == []
    assert report["messages"] == []


def test_chart_metadata() -> None:
    metadata = chart_metadata()
    pyproject = (REPO / "pyproject.toml").read_text()
    version = re.search(r'^\[project\][^[]*?^version = "([^"]+)"', pyproject, re.M | re.S)
    assert version is not None
    assert metadata["apiVersion"] == "v2"
    assert metadata["appVersion"] == version.group(1)
    assert metadata["kubeVersion"] == f">={MIN_KUBE_VERSION}-0"
    for key in ("kubeVersion", "home", "sources", "maintainers", "keywords", "icon"):
        assert metadata.get(key), key


def test_scenario_renders_the_expected_objects(scenario: Rendered) -> None:
    values = scenario.values
    kinds = sorted(o["kind"] for o in scenario.objects)
    chart_made_keys = any(ws["name"] in values["apiKeys"] for ws in values["config"]["workspaces"])
    expected = ["ConfigMap", "Deployment", "Service"]
    expected += ["ServiceAccount"] * values["serviceAccount"]["create"]
    expected += ["Secret"] * chart_made_keys
    expected += ["Secret"] * scenario.web.chart_made
    expected += ["ServiceMonitor"] * values["serviceMonitor"]["enabled"]
    expected += ["PrometheusRule"] * values["prometheusRule"]["enabled"]
    expected += ["ConfigMap"] * values["dashboard"]["enabled"]
    assert kinds == sorted(expected)
    for obj in scenario.objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "braze-exporter"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == chart_metadata()["appVersion"]
        assert labels["helm.sh/chart"] == "braze-exporter-" + chart_metadata()["version"]
        for key, value in values["commonLabels"].items():
            assert labels[key] == value


# --- schemas: Kubernetes and the Prometheus Operator --------------------------------------


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_objects_match_the_kubernetes_api(scenario: Rendered, version: str) -> None:
    for obj in scenario.objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        kubernetes_validate.validate(obj, version, strict=True)


def strict(schema: Any) -> Any:
    """The schema with unknown fields rejected, as `kubectl apply --validate=strict` does."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    return schema


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, jsonschema.Draft7Validator]:
    validators = {}
    for path in sorted(CRD_DIR.glob("monitoring.coreos.com_*.yaml")):
        crd = yaml.safe_load(path.read_text())
        version = crd["spec"]["versions"][0]
        assert version["name"] == "v1"
        schema = strict(version["schema"]["openAPIV3Schema"])
        validators[crd["spec"]["names"]["kind"]] = jsonschema.Draft7Validator(schema)
    assert set(validators) == {"ServiceMonitor", "PrometheusRule"}
    return validators


def test_operator_objects_match_the_crds(
    scenario: Rendered, crd_validators: dict[str, jsonschema.Draft7Validator]
) -> None:
    for kind, validator in crd_validators.items():
        for obj in scenario.all(kind):
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            validator.validate(obj)


def test_the_crd_check_catches_a_misspelt_field(
    default: Rendered, crd_validators: dict[str, jsonschema.Draft7Validator]
) -> None:
    monitor = copy.deepcopy(default.one("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["honorlabels"] = True
    with pytest.raises(jsonschema.ValidationError, match="honorlabels"):
        crd_validators["ServiceMonitor"].validate(monitor)


# --- the pod -------------------------------------------------------------------------------


def test_pod_meets_the_restricted_pod_security_standard(scenario: Rendered) -> None:
    spec = scenario.pod["spec"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["automountServiceAccountToken"] is False
    for key in ("hostNetwork", "hostPID", "hostIPC", "initContainers", "ephemeralContainers"):
        assert key not in spec
    context = scenario.container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    allowed_volumes = {"configMap", "secret", "projected", "emptyDir", "downwardAPI"}
    for volume in spec["volumes"]:
        assert set(volume) - {"name"} <= allowed_volumes


def test_one_poller_replaced_by_recreate(scenario: Rendered) -> None:
    deployment = scenario.one("Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_container_args_and_port(scenario: Rendered) -> None:
    container = scenario.container
    log, web = scenario.values["log"], scenario.values["web"]
    assert container["args"] == [
        "--config.file=/etc/braze-exporter/config.yaml",
        f"--web.listen-address=:{PORT}",
        f"--web.telemetry-path={web['telemetryPath']}",
        f"--web.max-requests={web['maxRequests']}",
        *(["--web.disable-exporter-metrics"] if web["disableExporterMetrics"] else []),
        *([f"--web.config.file={WEB_DIR}/web-config.yml"] if scenario.web.enabled else []),
        f"--log.format={log['format']}",
        f"--log.level={log['level']}",
    ]
    assert container["ports"] == [
        {"name": scenario.web.port_name, "containerPort": PORT, "protocol": "TCP"}
    ]


def test_default_http_server_flags(default: Rendered) -> None:
    assert default.values["web"] == {
        "telemetryPath": "/metrics",
        "disableExporterMetrics": False,
        "maxRequests": 40,
    }
    assert not default.web.enabled


def test_resources_are_set(scenario: Rendered) -> None:
    resources = scenario.container["resources"]
    assert resources == scenario.values["resources"]
    assert resources["requests"]["cpu"]
    assert resources["requests"]["memory"]
    assert resources["limits"]["memory"]


def test_default_resources_are_small(default: Rendered) -> None:
    assert default.container["resources"] == {
        "requests": {"cpu": "10m", "memory": "64Mi"},
        "limits": {"memory": "128Mi"},
    }


def test_image_defaults_to_the_app_version(default: Rendered, chart: Chart) -> None:
    assert default.container["image"] == f"braze-exporter:{chart_metadata()['appVersion']}"
    digest = "sha256:" + "ab" * 32
    pinned = render(chart, {"image": {"repository": "r.example/b", "tag": "9", "digest": digest}})
    assert pinned.container["image"] == f"r.example/b@{digest}"


def test_overrides_reach_the_pod(chart: Chart) -> None:
    rendered = render(chart, scenario_values("overrides"))
    spec = rendered.pod["spec"]
    assert rendered.one("Deployment")["metadata"]["name"] == "braze"
    assert rendered.pod["metadata"]["annotations"]["example.com/owner"] == "growth"
    assert rendered.pod["metadata"]["labels"]["tier"] == "monitoring"
    assert spec["priorityClassName"] == "monitoring"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in spec["affinity"]
    assert {e["name"] for e in rendered.container["env"]} == {
        "HTTPS_PROXY",
        "PROMETHEUS_DISABLE_CREATED_SERIES",
    }


def test_service_account(chart: Chart, default: Rendered) -> None:
    account = default.one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert default.pod["spec"]["serviceAccountName"] == account["metadata"]["name"] == FULLNAME
    existing = render(chart, scenario_values("monitoring-off"))
    assert existing.all("ServiceAccount") == []
    assert existing.pod["spec"]["serviceAccountName"] == "monitoring"
    assert existing.pod["spec"]["imagePullSecrets"] == [{"name": "registry-credentials"}]


# --- config and API keys -------------------------------------------------------------------


def test_config_is_the_values_config_plus_key_files(scenario: Rendered) -> None:
    config = scenario.config
    expected = copy.deepcopy(scenario.values["config"])
    for workspace in config["workspaces"]:
        assert re.fullmatch(r"keys/[-._a-zA-Z0-9]+\.key", workspace.pop("api_key_file"))
    assert config == expected


def config_mount(rendered: Rendered) -> tuple[PurePosixPath, dict[str, Any]]:
    """The folder holding config.yaml in the container, and its projected volume."""
    config_file = PurePosixPath("/etc/braze-exporter/config.yaml")
    assert f"--config.file={config_file}" in rendered.container["args"]
    (mount,) = [
        m for m in rendered.container["volumeMounts"] if config_file.is_relative_to(m["mountPath"])
    ]
    assert mount["readOnly"] is True
    (volume,) = [v for v in rendered.pod["spec"]["volumes"] if v["name"] == mount["name"]]
    return PurePosixPath(mount["mountPath"]), volume["projected"]


def mounted_files(rendered: Rendered) -> dict[str, tuple[str, str, str]]:
    """Each file of the config volume: path -> (ConfigMap or Secret, its name, its key)."""
    _, projected = config_mount(rendered)
    files = {}
    for source in projected["sources"]:
        ((kind, ref),) = source.items()
        for item in ref["items"]:
            assert item["path"] not in files, f"{item['path']} is projected twice"
            files[item["path"]] = (kind, ref["name"], item["key"])
    return files


def test_api_keys_are_mounted_where_the_config_points(scenario: Rendered) -> None:
    values = scenario.values
    files = mounted_files(scenario)
    assert files["config.yaml"] == ("configMap", scenario.fullname, "config.yaml")
    config_dir, projected = config_mount(scenario)
    referenced = set()
    for workspace in scenario.config["workspaces"]:
        # The exporter resolves a relative api_key_file against the config file's folder.
        name, path = workspace["name"], workspace["api_key_file"]
        assert (config_dir / path).parent == PurePosixPath("/etc/braze-exporter/keys")
        kind, secret, key = files[path]
        assert kind == "secret"
        if name in values["apiKeys"]:
            assert secret == f"{scenario.fullname}-api-keys"
            data = scenario.one("Secret", secret)["data"]
            assert base64.b64decode(data[key]).decode() == values["apiKeys"][name]
        else:
            assert secret == values["existingSecret"]["name"]
            assert key == values["existingSecret"]["keys"].get(name, name)
        referenced.add(path)
    assert referenced == set(files) - {"config.yaml"}, "a mounted key no workspace uses"
    assert projected["defaultMode"] == 0o440


def test_no_api_key_outside_the_secret(scenario: Rendered) -> None:
    keys = list(scenario.values["apiKeys"].values())
    secrets = [base64.b64encode(key.encode()).decode() for key in keys]
    for obj in scenario.objects:
        text = json.dumps(obj)
        if obj["kind"] == "Secret":
            assert all(secret in text for secret in secrets)
            continue
        for key in keys + secrets:
            assert key not in text, f"an API key leaks into {obj['kind']}"
    for workspace in scenario.config["workspaces"]:
        assert "api_key_env" not in workspace


def lay_out_config_dir(rendered: Rendered, directory: Path) -> Path:
    """Write the config volume's files as the kubelet would; return the config file.

    Keys of the chart-made Secret are its real data; keys of an existing Secret are
    stand-ins, since only the user has them."""
    for path, (kind, name, key) in mounted_files(rendered).items():
        if kind == "configMap":
            content = rendered.one("ConfigMap", name)["data"][key]
        elif secrets := [s for s in rendered.all("Secret") if s["metadata"]["name"] == name]:
            content = base64.b64decode(secrets[0]["data"][key]).decode()
        else:
            content = f"stand-in-key-for-{key}\n"
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return directory / "config.yaml"


def check_config(config_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BRAZE_EXPORTER, "--check-config", "--config.file", config_file],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def test_ca() -> trustme.CA:
    return trustme.CA()


def lay_out_web_dir(rendered: Rendered, directory: Path, ca: trustme.CA) -> None:
    """Write the web volume's files as the kubelet would, if there is one.

    The chart-made web-config.yml is the real one; the Secrets only the user has are
    stand-ins: a certificate and key from a test CA, that CA as the client CA, and for an
    existing Secret a web-config.yml that says what the values say it does."""
    web = rendered.web
    if not web.enabled:
        return
    cert = ca.issue_cert(f"{rendered.fullname}.{NAMESPACE}.svc")
    stand_ins = {
        "tls.crt": cert.cert_chain_pems[0].bytes(),
        "tls.key": cert.private_key_pem.bytes(),
        "client-ca.crt": ca.cert_pem.bytes(),
    }
    files = {}
    if web.existing_secret:
        tls, file = web.values["tls"], {}
        if web.tls:
            server = {"cert_file": "tls.crt", "key_file": "tls.key"}
            if tls["clientAuthType"] != "NoClientCert":
                server |= {
                    "client_auth_type": tls["clientAuthType"],
                    "client_ca_file": "client-ca.crt",
                }
            file["tls_server_config"] = server
        files = {"web-config.yml": yaml.safe_dump(file).encode(), **stand_ins}
    else:
        for path, (secret, key) in web_files(rendered).items():
            if secret == f"{rendered.fullname}-web-config":
                data = rendered.one("Secret", secret)["data"][key]
                files[path.name] = base64.b64decode(data)
            else:
                files[path.name] = stand_ins[path.name]
    directory.mkdir()
    for name, content in files.items():
        (directory / name).write_bytes(content)


def test_the_exporter_accepts_the_pods_args_and_files(
    scenario: Rendered, tmp_path: Path, test_ca: trustme.CA
) -> None:
    """The container's args, with the volumes' files laid out under tmp_path as the kubelet
    would mount them under /etc/braze-exporter, pass the exporter's own --check-config."""
    lay_out_config_dir(scenario, tmp_path)
    lay_out_web_dir(scenario, tmp_path / WEB_DIR.name, test_ca)
    args = [arg.replace("/etc/braze-exporter", str(tmp_path)) for arg in scenario.container["args"]]
    result = subprocess.run(
        [BRAZE_EXPORTER, *args, "--check-config"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    count = len(scenario.values["config"]["workspaces"])
    assert f"ok ({count} workspace" in result.stdout
    web = scenario.web
    web_lines = [line for line in result.stdout.splitlines() if "web-config.yml: ok" in line]
    assert len(web_lines) == web.enabled
    for line in web_lines:
        assert ("no TLS" in line) != web.tls
        assert ("no basic auth" in line) != bool(web.values["basicAuthUsers"])


def test_the_exporters_check_fails_without_the_key_files(default: Rendered, tmp_path: Path) -> None:
    config_file = lay_out_config_dir(default, tmp_path)
    for key_file in (tmp_path / "keys").iterdir():
        key_file.unlink()
    result = check_config(config_file)
    assert result.returncode == 2
    assert "api_key_file: cannot read" in result.stderr


def pod_annotations(chart: Chart, values: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = render(chart, values).pod["metadata"]["annotations"]
    return annotations


def test_checksums_roll_the_pod_on_config_and_key_changes(chart: Chart) -> None:
    keys = scenario_values("chart-made-keys")
    before = pod_annotations(chart, keys)
    assert re.fullmatch(r"[0-9a-f]{64}", before["checksum/config"])
    assert re.fullmatch(r"[0-9a-f]{64}", before["checksum/secret"])

    slower = copy.deepcopy(keys)
    slower["config"]["poll"]["interval"] = "20m"
    after = pod_annotations(chart, slower)
    assert after["checksum/config"] != before["checksum/config"]
    assert after["checksum/secret"] == before["checksum/secret"]

    rotated = copy.deepcopy(keys)
    rotated["apiKeys"]["europe"] = "test-key-europe-rotated"
    after = pod_annotations(chart, rotated)
    assert after["checksum/config"] == before["checksum/config"]
    assert after["checksum/secret"] != before["checksum/secret"]

    relabelled = copy.deepcopy(keys)
    relabelled["podLabels"] = {"tier": "monitoring"}
    assert pod_annotations(chart, relabelled) == before


def test_no_secret_checksum_without_a_chart_made_secret(default: Rendered) -> None:
    assert set(default.pod["metadata"]["annotations"]) == {"checksum/config"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"existingSecret": {"name": ""}},
            'workspace "production" has no API key: set apiKeys.production',
        ),
        (
            {"apiKeys": {"prod": KEY}},
            'API key given for workspace "prod", which is not in config.workspaces',
        ),
        (
            {"existingSecret": {"keys": {"staging": "k"}}},
            'API key given for workspace "staging"',
        ),
        (
            {"apiKeys": {"production": KEY}, "existingSecret": {"keys": {"production": "k"}}},
            "apiKeys.production and existingSecret.keys.production are both set",
        ),
        (
            {
                "config": {
                    "workspaces": [
                        {"name": "production", "instance": "US-03"},
                        {"name": "production", "instance": "US-01"},
                    ]
                }
            },
            'config.workspaces[1].name: duplicate workspace name "production"',
        ),
        (
            {"config": {"workspaces": [{"name": "EU team", "instance": "EU-01"}]}},
            'workspace "EU team": "EU team" is not a valid Secret data key; '
            "set existingSecret.keys.EU team",
        ),
    ],
    ids=["no-key", "unknown-workspace", "unknown-existing", "both", "duplicate", "bad-key"],
)
def test_templates_reject_key_mistakes(chart: Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmRenderError) as caught:
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(caught.value)


# --- web config: TLS, client certificates, basic auth --------------------------------------

PROMETHEUS_HASH = "$2y$10$jA.j5q0gH6/rD8q1fmmMy.EXzIE2eWxQwXMRPT21WLICysbVhmaLq"
SCRAPE_SECRET = {"name": "braze-exporter-scrape", "key": "username"}
SCRAPE_AUTH = {"username": SCRAPE_SECRET, "password": {**SCRAPE_SECRET, "key": "password"}}
CLIENT_CERT = {
    "cert": {"secret": {"name": "prometheus-scrape-tls", "key": "tls.crt"}},
    "keySecret": {"name": "prometheus-scrape-tls", "key": "tls.key"},
}
WEB_CONFIG_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users"}


def web_volume(rendered: Rendered) -> dict[str, Any] | None:
    """The projected volume mounted at WEB_DIR, or None; its mount is read-only."""
    mounts = [m for m in rendered.container["volumeMounts"] if m["mountPath"] == str(WEB_DIR)]
    if not mounts:
        return None
    (mount,) = mounts
    assert mount["readOnly"] is True
    (volume,) = [v for v in rendered.pod["spec"]["volumes"] if v["name"] == mount["name"]]
    projected: dict[str, Any] = volume["projected"]
    return projected


def web_files(rendered: Rendered) -> dict[PurePosixPath, tuple[str, str]]:
    """Each file of the web volume given by name: its path -> (Secret, data key)."""
    projected = web_volume(rendered)
    assert projected is not None
    files = {}
    for source in projected["sources"]:
        ((kind, ref),) = source.items()
        assert kind == "secret"
        for item in ref.get("items", []):
            path = WEB_DIR / item["path"]
            assert path not in files, f"{path} is projected twice"
            files[path] = (ref["name"], item["key"])
    return files


def web_config_file(rendered: Rendered) -> dict[str, Any]:
    """The chart-made web-config.yml, parsed."""
    secret = rendered.one("Secret", f"{rendered.fullname}-web-config")
    assert set(secret["data"]) == {"web-config.yml"}
    parsed: dict[str, Any] = yaml.safe_load(base64.b64decode(secret["data"]["web-config.yml"]))
    return parsed


def test_web_config_is_mounted_and_passed_when_asked_for(scenario: Rendered) -> None:
    web = scenario.web
    flag = f"--web.config.file={WEB_DIR}/web-config.yml"
    projected = web_volume(scenario)
    secrets = [s["metadata"]["name"] for s in scenario.all("Secret")]
    assert (f"{scenario.fullname}-web-config" in secrets) == web.chart_made
    if not web.enabled:
        assert projected is None
        assert not any(a.startswith("--web.config.file") for a in scenario.container["args"])
        return
    assert flag in scenario.container["args"]
    assert projected is not None
    assert projected["defaultMode"] == 0o440
    if web.existing_secret:  # mounted whole: the files web-config.yml names sit next to it
        assert projected["sources"] == [{"secret": {"name": web.existing_secret}}]
    else:
        web_secret = f"{scenario.fullname}-web-config"
        assert web_files(scenario)[WEB_DIR / "web-config.yml"] == (web_secret, "web-config.yml")


def test_chart_made_web_config_says_what_the_values_say(scenario: Rendered) -> None:
    web = scenario.web
    if not web.chart_made:
        return
    file = web_config_file(scenario)
    assert set(file) <= WEB_CONFIG_KEYS
    assert file.get("basic_auth_users", {}) == web.values["basicAuthUsers"]
    assert file.get("http_server_config", {}).get("headers", {}) == web.values["headers"]
    tls = web.values["tls"]
    if not web.tls:
        assert "tls_server_config" not in file
        return
    server = file["tls_server_config"]
    assert server["client_auth_type"] == tls["clientAuthType"]
    for key, value in (("min_version", tls["minVersion"]), ("max_version", tls["maxVersion"])):
        assert server.get(key, "") == value
    # Every file the config names is in the web volume, from the Secret and key it should be.
    files = web_files(scenario)
    expected = {
        "cert_file": (tls["secretName"], "tls.crt"),
        "key_file": (tls["secretName"], "tls.key"),
    }
    if tls["clientCASecret"]:
        expected["client_ca_file"] = (tls["clientCASecret"], tls["clientCAKey"])
    # The exporter resolves a relative path against the web config file's folder.
    named = {key: WEB_DIR / server[key] for key in server if key.endswith("_file")}
    assert set(named) == set(expected)
    for key, path in named.items():
        assert path.parent == WEB_DIR, key
        assert files[path] == expected[key], key
    assert set(files) == {WEB_DIR / "web-config.yml", *named.values()}


def test_probes_keep_working_with_the_web_config(scenario: Rendered) -> None:
    web = scenario.web
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        check = scenario.container[probe]
        assert check.items() >= scenario.values[probe].items()
        assert check["periodSeconds"] > 0
        assert check["timeoutSeconds"] > 0
        if web.client_cert_required:  # the kubelet has no client certificate to show
            assert "httpGet" not in check
            assert check["tcpSocket"] == {"port": web.port_name}
        else:  # /healthz and /readyz ask for no user; the kubelet doesn't verify certificates
            assert "tcpSocket" not in check
            scheme = {"scheme": "HTTPS"} if web.tls else {}
            assert check["httpGet"] == {"path": path, "port": web.port_name, **scheme}


CLIENT_AUTH_PROBES = [  # (clientAuthType, the probes' check)
    ("NoClientCert", "httpGet"),
    ("VerifyClientCertIfGiven", "httpGet"),  # the kubelet shows no certificate, which is allowed
    ("RequireAndVerifyClientCert", "tcpSocket"),
]


@pytest.mark.parametrize("existing", [False, True], ids=["chart-made", "existing-secret"])
@pytest.mark.parametrize(("client_auth", "check"), CLIENT_AUTH_PROBES)
def test_each_client_auth_type_gets_probes_that_pass(
    chart: Chart, client_auth: str, check: str, existing: bool
) -> None:
    tls: dict[str, Any] = {"enabled": True, "clientAuthType": client_auth}
    if existing:
        web_config: dict[str, Any] = {"existingSecret": "braze-exporter-web", "tls": tls}
    else:
        tls["secretName"] = "braze-exporter-tls"
        if client_auth != "NoClientCert":
            tls["clientCASecret"] = "clients-ca"
        web_config = {"tls": tls}
    monitor = {"tlsConfig": CLIENT_CERT} if check == "tcpSocket" else {}
    rendered = render(chart, {"webConfig": web_config, "serviceMonitor": monitor})
    for probe in ("livenessProbe", "readinessProbe"):
        assert check in rendered.container[probe]
        if check == "httpGet":
            assert rendered.container[probe]["httpGet"]["scheme"] == "HTTPS"
    if not existing:
        assert web_config_file(rendered)["tls_server_config"]["client_auth_type"] == client_auth


def test_service_monitor_scrapes_over_tls_with_basic_auth_as_asked(scenario: Rendered) -> None:
    web, values = scenario.web, scenario.values["serviceMonitor"]
    for monitor in scenario.all("ServiceMonitor"):
        (endpoint,) = monitor["spec"]["endpoints"]
        if web.tls:
            assert endpoint["scheme"] == "https"
            server_name = f"{scenario.fullname}.{NAMESPACE}.svc"
            assert endpoint["tlsConfig"] == {"serverName": server_name, **values["tlsConfig"]}
        else:
            assert "scheme" not in endpoint
            assert "tlsConfig" not in endpoint
        if web.client_cert_required:
            assert endpoint["tlsConfig"]["cert"] and endpoint["tlsConfig"]["keySecret"]
        assert endpoint.get("basicAuth", {}) == values["basicAuth"]
        if web.values["basicAuthUsers"]:
            assert endpoint["basicAuth"]


def test_web_secrets_stay_in_their_secret(scenario: Rendered) -> None:
    hashes = list(scenario.web.values["basicAuthUsers"].values())
    for obj in scenario.objects:
        if obj["kind"] != "Secret":
            text = json.dumps(obj)
            assert not any(h in text for h in hashes), f"a password hash leaks into {obj['kind']}"
    assert not any(h in scenario.notes for h in hashes)


def test_notes_say_how_to_reach_the_metrics_through_the_web_config(scenario: Rendered) -> None:
    web, notes = scenario.web, scenario.notes
    path = scenario.values["web"]["telemetryPath"]
    (curl,) = [line for line in notes.splitlines() if "curl -s" in line]
    assert f"{'https' if web.tls else 'http'}://localhost:9877{path} " in curl
    assert ("-k" in curl.split()) == web.tls
    assert ("-u <user>" in curl) == bool(web.values["basicAuthUsers"])
    assert ("--cert client.crt --key client.key" in curl) == web.client_cert_required
    assert ("Web config:" in notes) == web.enabled
    assert ("only check that the port accepts connections" in notes) == web.client_cert_required


def test_web_config_changes_roll_the_pod(chart: Chart) -> None:
    values = scenario_values("web-tls-basic-auth")
    values["serviceMonitor"]["tlsConfig"].update(CLIENT_CERT)  # for a required certificate
    before = pod_annotations(chart, values)
    assert re.fullmatch(r"[0-9a-f]{64}", before["checksum/web-config"])

    tls = values["webConfig"]["tls"]
    for change in (
        {"basicAuthUsers": {"prometheus": PROMETHEUS_HASH.replace("jA", "jB")}},
        {"headers": {"X-Frame-Options": "deny"}},
        {"tls": {**tls, "clientAuthType": "RequireAndVerifyClientCert"}},
        {"tls": {**tls, "minVersion": "TLS13"}},
    ):
        changed = copy.deepcopy(values)
        changed["webConfig"].update(change)
        after = pod_annotations(chart, changed)
        assert after["checksum/web-config"] != before["checksum/web-config"], change
        assert after["checksum/config"] == before["checksum/config"], change

    scraped_less_often = copy.deepcopy(values)
    scraped_less_often["serviceMonitor"]["interval"] = "5m"
    assert pod_annotations(chart, scraped_less_often) == before


def test_no_web_config_checksum_without_a_chart_made_web_config(chart: Chart) -> None:
    annotations = pod_annotations(chart, scenario_values("web-existing-secret"))
    assert set(annotations) == {"checksum/config"}


TLS_ON = {"enabled": True, "secretName": "braze-exporter-tls"}
MTLS = {**TLS_ON, "clientAuthType": "RequireAndVerifyClientCert", "clientCASecret": "clients-ca"}
WEB_MISTAKES = [  # (values, a part of the error message)
    pytest.param(
        {"webConfig": {"tls": {"enabled": True}}},
        "webConfig.tls.enabled needs webConfig.tls.secretName: a kubernetes.io/tls Secret",
        id="tls-without-secret",
    ),
    pytest.param(
        {"webConfig": {"tls": {"secretName": "braze-exporter-tls"}}},
        "webConfig.tls.secretName is set but webConfig.tls.enabled is false",
        id="secret-without-tls",
    ),
    pytest.param(
        {"webConfig": {"tls": {"clientAuthType": "RequireAndVerifyClientCert"}}},
        "webConfig.tls.clientAuthType is RequireAndVerifyClientCert but webConfig.tls.enabled "
        "is false",
        id="client-auth-without-tls",
    ),
    pytest.param(
        {
            "webConfig": {"tls": {**TLS_ON, "clientAuthType": "RequireAndVerifyClientCert"}},
            "serviceMonitor": {"tlsConfig": CLIENT_CERT},
        },
        "webConfig.tls.clientAuthType RequireAndVerifyClientCert needs "
        "webConfig.tls.clientCASecret",
        id="verify-without-ca",
    ),
    pytest.param(
        {"webConfig": {"tls": {**TLS_ON, "clientCASecret": "clients-ca"}}},
        "webConfig.tls.clientCASecret is set but webConfig.tls.clientAuthType is NoClientCert",
        id="ca-without-verify",
    ),
    pytest.param(
        {"webConfig": {"tls": {**TLS_ON, "minVersion": "TLS13", "maxVersion": "TLS12"}}},
        "webConfig.tls.minVersion TLS13 is newer than webConfig.tls.maxVersion TLS12",
        id="min-after-max",
    ),
    pytest.param(
        {"webConfig": {"existingSecret": "web", "basicAuthUsers": {"p": PROMETHEUS_HASH}}},
        "webConfig.existingSecret and webConfig.basicAuthUsers are both set",
        id="existing-and-users",
    ),
    pytest.param(
        {"webConfig": {"existingSecret": "web", "tls": TLS_ON}},
        "webConfig.existingSecret and webConfig.tls.secretName are both set",
        id="existing-and-tls-secret",
    ),
    pytest.param(
        {"webConfig": {"basicAuthUsers": {"prometheus": PROMETHEUS_HASH}}},
        "webConfig.basicAuthUsers is set: Prometheus needs a user too; "
        "set serviceMonitor.basicAuth",
        id="users-without-scrape-auth",
    ),
    pytest.param(
        {"webConfig": {"tls": MTLS}},
        "webConfig.tls.clientAuthType RequireAndVerifyClientCert: Prometheus must show a client "
        "certificate; set serviceMonitor.tlsConfig.cert and keySecret",
        id="required-cert-without-scrape-cert",
    ),
    pytest.param(
        {"serviceMonitor": {"tlsConfig": {"insecureSkipVerify": True}}},
        "serviceMonitor.tlsConfig is set but webConfig.tls.enabled is false",
        id="scrape-tls-without-tls",
    ),
]


@pytest.mark.parametrize(("values", "message"), WEB_MISTAKES)
def test_templates_reject_web_config_mistakes(
    chart: Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(HelmRenderError) as caught:
        chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(caught.value)


def test_the_scrape_checks_go_with_the_service_monitor(chart: Chart) -> None:
    """Without a ServiceMonitor, nothing scrapes through it, so nothing is asked of it."""
    for values in (
        {"webConfig": {"basicAuthUsers": {"prometheus": PROMETHEUS_HASH}}},
        {
            "webConfig": {"tls": MTLS},
        },
    ):
        rendered = render(chart, {**values, "serviceMonitor": {"enabled": False}})
        assert rendered.web.enabled


@pytest.mark.parametrize(
    "hash_",
    [
        PROMETHEUS_HASH,  # htpasswd -B
        PROMETHEUS_HASH.replace("$2y$", "$2b$"),  # Python's bcrypt
        PROMETHEUS_HASH.replace("$2y$10$", "$2a$12$"),  # Go's x/crypto/bcrypt
    ],
    ids=["2y", "2b", "2a"],
)
def test_schema_accepts_bcrypt_hashes(chart: Chart, hash_: str) -> None:
    values = {
        "webConfig": {"basicAuthUsers": {"prometheus@example.com": hash_}},
        "serviceMonitor": {"basicAuth": SCRAPE_AUTH},
    }
    assert web_config_file(render(chart, values))["basic_auth_users"] == {
        "prometheus@example.com": hash_
    }


# --- values schema -------------------------------------------------------------------------


WORKSPACE = {"name": "p", "instance": "US-03"}
BAD_VALUES = [  # (dotted path, value, a part of the error message)
    ("config.poll.length", "3", "'/config/poll/length': got string, want integer"),
    ("config.poll.interval", True, "'/config/poll/interval': got boolean"),
    ("config.poll.interval", "-5m", "'/config/poll/interval': '-5m' does not match"),
    ("config.poll.interval", -300, "'/config/poll/interval': minimum"),
    ("config.poll.interval", "0s", "'/config/poll/interval': '0s' does not match"),
    ("config.poll.interval", 0, "'/config/poll/interval': minimum"),
    ("config.poll.interval", 0.5, "'/config/poll/interval': minimum"),
    ("config.poll.interval", 86401, "'/config/poll/interval': maximum"),
    ("config.poll.timeout", 86401, "'/config/poll/timeout': maximum"),
    ("config.poll.timeout", "0m0.0s", "'/config/poll/timeout': '0m0.0s' does not match"),
    ("config.poll.interval", "15 minutes", "'/config/poll/interval'"),
    ("config.poll.length", 365, "'/config/poll/length': maximum"),
    ("config.poll.concurrency", 0, "'/config/poll/concurrency': minimum"),
    ("config.poll.concurrency", 65, "'/config/poll/concurrency': maximum"),
    ("config.poll.concurrency", True, "'/config/poll/concurrency': got boolean"),
    ("config.poll.kpis", ["wau"], "'/config/poll/kpis/0'"),
    ("config.poll.kpi", ["mau"], "'/config/poll': additional properties 'kpi' not allowed"),
    ("config.pol", {}, "'/config': additional properties 'pol' not allowed"),
    ("config.workspaces", [], "'/config/workspaces': minItems"),
    (
        "config.workspaces",
        [{"instance": "US-03"}],
        "'/config/workspaces/0': missing property 'name'",
    ),
    ("config.workspaces", [{**WORKSPACE, "name": ""}], "'/config/workspaces/0/name'"),
    ("config.workspaces", [{**WORKSPACE, "name": " p"}], "'/config/workspaces/0/name'"),
    ("config.workspaces", [{**WORKSPACE, "time_zone": ""}], "'/config/workspaces/0/time_zone'"),
    (
        "config.workspaces",
        [{**WORKSPACE, "time_zone": "Europe/Berlin "}],
        "'/config/workspaces/0/time_zone'",
    ),
    ("config.workspaces", [{**WORKSPACE, "instance": "US-11"}], "'/config/workspaces/0/instance'"),
    ("config.workspaces", [{"name": "p"}], "'/config/workspaces/0': 'oneOf' failed"),
    ("config.workspaces", [{**WORKSPACE, "url": "https://x"}], "'/config/workspaces/0': 'oneOf'"),
    ("config.workspaces", [{"name": "p", "url": "ftp://x"}], "'/config/workspaces/0/url'"),
    ("config.workspaces", [{"name": "p", "url": "https://a:b@x"}], "'/config/workspaces/0/url'"),
    (
        "config.workspaces",
        [{**WORKSPACE, "insecure_http": "yes"}],
        "'/config/workspaces/0/insecure_http': got string, want boolean",
    ),
    (
        "config.workspaces",
        [{**WORKSPACE, "api_key_env": "KEY"}],
        "'/config/workspaces/0': additional properties 'api_key_env' not allowed",
    ),
    (
        "config.workspaces",
        [{**WORKSPACE, "whole_workspace": False}],
        "'/config/workspaces/0': missing property 'apps'",
    ),
    (
        "config.workspaces",
        [{**WORKSPACE, "apps": [{"name": "ios", "id": 42}]}],
        "'/config/workspaces/0/apps/0/id': got number, want string",
    ),
    ("apiKeys.production", 123, "'/apiKeys/production': got number"),
    ("apiKeys.production", "mau", "'/apiKeys/production': 'mau' does not match"),
    ("apiKeys.production", f"{KEY}\n{KEY}", "'/apiKeys/production'"),
    ("existingSecret.keys.production", "a/b", "'/existingSecret/keys/production'"),
    ("log.level", "verbose", "'/log/level'"),
    ("replicaCount", 2, "'/replicaCount': maximum"),
    ("prometheusRule.thresholds.weeklyDropRatio", 1.5, "/weeklyDropRatio': maximum"),
    ("prometheusRule.thresholds.dailyDropRatio", 0, "/dailyDropRatio': exclusiveMinimum"),
    ("prometheusRule.thresholds.staleAfterHours", "36", "/staleAfterHours': got string"),
    ("prometheusRule.thresholds.dauWeeklyDropRatio", 0, "/dauWeeklyDropRatio': exclusiveMin"),
    ("prometheusRule.thresholds.newUsersWeeklyDropRatio", 2, "/newUsersWeeklyDropRatio': max"),
    ("prometheusRule.thresholds.uninstallsWeeklySpikeRatio", 1, "SpikeRatio': exclusiveMinimum"),
    ("prometheusRule.thresholds.uninstallsSpikeMinCount", -1, "/uninstallsSpikeMinCount': min"),
    ("prometheusRule.thresholds.hourlySessionsDropRatio", 1.5, "/hourlySessionsDropRatio': max"),
    ("prometheusRule.thresholds.hourlySessionsDropMinCount", "100", "DropMinCount': got string"),
    ("prometheusRule.thresholds.hourlyStaleAfterHours", 0, "/hourlyStaleAfterHours': exclusive"),
    ("prometheusRule.thresholds.hourlyStaleAfterHour", 3, "'hourlyStaleAfterHour' not allowed"),
    ("prometheusRule.for.BrazeExporterDown", "5 min", "'/prometheusRule/for/BrazeExporterDown'"),
    ("prometheusRule.for.BrazeDown", "5m", "additional properties 'BrazeDown' not allowed"),
    ("prometheusRule.ruleLabels", {"a-b": "c"}, "additional properties 'a-b' not allowed"),
    ("serviceMonitor.interval", "1 minute", "'/serviceMonitor/interval'"),
    ("serviceMonitor.enabled", "yes", "'/serviceMonitor/enabled': got string"),
    ("serviceMonitr", {}, "additional properties 'serviceMonitr' not allowed"),
    ("web.telemetryPath", "metrics", "'/web/telemetryPath': 'metrics' does not match"),
    ("web.telemetryPath", "/healthz", "'/web/telemetryPath': 'not' failed"),
    ("web.maxRequests", -1, "'/web/maxRequests': minimum"),
    ("web.disableExporterMetrics", "yes", "'/web/disableExporterMetrics': got string"),
    # A password where its bcrypt hash belongs.
    ("webConfig.basicAuthUsers.prometheus", "hunter2", "/prometheus': 'hunter2' does not match"),
    ("webConfig.basicAuthUsers", {"a:b": PROMETHEUS_HASH}, "properties 'a:b' not allowed"),
    ("webConfig.tls.enabled", "true", "'/webConfig/tls/enabled': got string, want boolean"),
    # What the exporter can't do: ask for a client certificate without verifying it, old TLS.
    ("webConfig.tls.clientAuthType", "RequireAnyClientCert", "'/webConfig/tls/clientAuthType'"),
    ("webConfig.tls.clientAuthType", "RequestClientCert", "'/webConfig/tls/clientAuthType'"),
    ("webConfig.tls.minVersion", "TLS11", "'/webConfig/tls/minVersion'"),
    ("webConfig.tls.minVersion", "TLS1.2", "'/webConfig/tls/minVersion'"),
    ("webConfig.basicAuthUsers.p", PROMETHEUS_HASH.replace("$2y$", "$2x$"), "/p': '$2x$"),
    ("webConfig.basicAuthUsers.p", PROMETHEUS_HASH.replace("$10$", "$03$"), "/p': '$2y$03$"),
    ("webConfig.tls.secretName", "My_Secret", "'/webConfig/tls/secretName'"),
    ("webConfig.tls.certFile", "tls.crt", "'/webConfig/tls': additional properties 'certFile'"),
    ("webConfig.headers.Server", "braze", "'/webConfig/headers': additional properties 'Server'"),
    ("webConfig.headers.X-Frame-Options", "allow", "'/webConfig/headers/X-Frame-Options'"),
    ("serviceMonitor.tlsConfig", {"cert": CLIENT_CERT["cert"]}, "'keySecret' required"),
    ("serviceMonitor.tlsConfig", {"caFile": "/ca.crt"}, "additional properties 'caFile'"),
    (
        "serviceMonitor.tlsConfig",
        {"ca": {"secret": SCRAPE_SECRET, "configMap": SCRAPE_SECRET}},
        "'/serviceMonitor/tlsConfig/ca': 'oneOf' failed",
    ),
    ("serviceMonitor.basicAuth", {"username": SCRAPE_SECRET}, "'password' required"),
    ("serviceMonitor.basicAuth.password", {"name": "s"}, "/password': missing property 'key'"),
]


@pytest.mark.parametrize(
    ("path", "value", "message"), BAD_VALUES, ids=[f"{p}={v!r}" for p, v, _ in BAD_VALUES]
)
def test_schema_rejects_bad_values(chart: Chart, path: str, value: object, message: str) -> None:
    with pytest.raises(HelmValuesError) as caught:
        chart.render(values=with_value(path, value), name=RELEASE, namespace=NAMESPACE)
    assert message in str(caught.value)


GOOD_VALUES = [
    ("config.poll.interval", "1h30m"),
    ("config.poll.interval", "1500ms"),
    ("config.poll.interval", "1.5h"),
    ("config.poll.interval", "1.5"),
    ("config.poll.interval", 86400),
    ("config.poll.interval", 900),
    ("config.poll.timeout", 2.5),
    ("config.poll.concurrency", 64),
    ("config.workspaces", [{"name": "p", "url": "http://braze.test:8080", "insecure_http": True}]),
    ("apiKeys.production", f"  {KEY}\n"),
    ("config.workspaces", [{"name": "production", "instance": "eu-01"}]),
    ("config.workspaces", [{**WORKSPACE, "time_zone": "America/Argentina/Buenos_Aires"}]),
    ("config.workspaces", [{**WORKSPACE, "time_zone": "Etc/GMT+5"}]),
    ("config.poll.kpis", ["mau", "dau", "new_users", "uninstalls", "sessions", "sessions_hourly"]),
    ("web.telemetryPath", "/braze/metrics"),
    ("web.maxRequests", 0),
    ("webConfig.headers", {"X-Frame-Options": "sameorigin", "X-XSS-Protection": "0"}),
]


@pytest.mark.parametrize(("path", "value"), GOOD_VALUES, ids=[f"{p}={v!r}" for p, v in GOOD_VALUES])
def test_schema_accepts_what_the_exporter_accepts(chart: Chart, path: str, value: object) -> None:
    chart.render(values=with_value(path, value), name=RELEASE, namespace=NAMESPACE)


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def test_schema_knows_the_exporters_instances_and_kpis() -> None:
    config = schema()["properties"]["config"]["properties"]
    pattern = config["workspaces"]["items"]["properties"]["instance"]["pattern"]
    for instance in INSTANCE_URLS:
        assert re.fullmatch(pattern, instance), instance
        assert re.fullmatch(pattern, instance.lower()), instance
    for unknown in ("US-09", "US-11", "EU-03", "us-03 ", ""):
        assert not re.fullmatch(pattern, unknown), unknown
    assert config["poll"]["properties"]["kpis"]["items"]["enum"] == list(SUPPORTED_KPIS)


def test_schema_knows_every_alert_of_the_rules_file() -> None:
    names = schema()["properties"]["prometheusRule"]["properties"]["for"]["properties"]
    alerts = {r["alert"] for g in rules_file_groups() for r in g["rules"] if "alert" in r}
    assert set(names) == alerts


# --- ServiceMonitor, PrometheusRule, dashboard ---------------------------------------------


def test_service_monitor_scrapes_the_service_as_job_braze_exporter(scenario: Rendered) -> None:
    monitors = scenario.all("ServiceMonitor")
    assert len(monitors) == scenario.values["serviceMonitor"]["enabled"]
    service = scenario.one("Service")
    port_name = scenario.web.port_name
    assert service["spec"]["ports"] == [
        {"name": port_name, "port": PORT, "targetPort": port_name, "protocol": "TCP"}
    ]
    assert service["spec"]["selector"].items() <= scenario.pod["metadata"]["labels"].items()
    for monitor in monitors:
        values = scenario.values["serviceMonitor"]
        spec = monitor["spec"]
        assert spec["jobLabel"] == "app.kubernetes.io/name"
        assert service["metadata"]["labels"]["app.kubernetes.io/name"] == "braze-exporter"
        assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        (endpoint,) = spec["endpoints"]
        assert endpoint["port"] == port_name
        assert endpoint["path"] == scenario.values["web"]["telemetryPath"]
        assert endpoint["honorLabels"] is True
        assert endpoint["interval"] == values["interval"]
        assert endpoint["scrapeTimeout"] == values["scrapeTimeout"]
        assert endpoint.get("relabelings", []) == values["relabelings"]
        assert endpoint.get("metricRelabelings", []) == values["metricRelabelings"]
        assert values["additionalLabels"].items() <= monitor["metadata"]["labels"].items()


def test_service_monitor_defaults(default: Rendered) -> None:
    (endpoint,) = default.one("ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["interval"] == "1m"


def rule_groups(rendered: Rendered) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = rendered.one("PrometheusRule")["spec"]["groups"]
    return groups


def test_default_rules_are_the_rules_file(default: Rendered) -> None:
    assert rule_groups(default) == rules_file_groups()


def changed_rule_fields(groups: list[dict[str, Any]]) -> dict[tuple[str, str], object]:
    """(rule, field) -> new value, for each field that differs from the rules file."""
    original = rules_file_groups()
    assert [g["name"] for g in groups] == [g["name"] for g in original]
    changes = {}
    for group, original_group in zip(groups, original, strict=True):
        assert {k: v for k, v in group.items() if k != "rules"} == {
            k: v for k, v in original_group.items() if k != "rules"
        }
        for rule, original_rule in zip(group["rules"], original_group["rules"], strict=True):
            assert rule_id(rule) == rule_id(original_rule)
            for field in rule.keys() | original_rule.keys():
                if rule.get(field) != original_rule.get(field):
                    changes[rule_id(rule), field] = rule.get(field)
    return changes


OVERRIDES = [  # (prometheusRule.<path>, value, the rule's field that must change and how)
    *[
        (f"thresholds.{key}", value, ((record, "expr"), f"vector({value})"))
        for (key, record), value in zip(
            THRESHOLD_RECORDS.items(), (0.25, 0.02, 0.3, 0.4, 3, 50, 0.6, 250, 48, 4), strict=True
        )
    ],
    *[
        (f"for.{alert}", duration, ((alert, "for"), duration))
        for alert, duration in (
            ("BrazeMonthlyActiveUsersWeeklyDrop", "3h"),
            ("BrazeMonthlyActiveUsersDailyDrop", "2h"),
            ("BrazeDailyActiveUsersWeeklyDrop", "2h"),
            ("BrazeNewUsersWeeklyDrop", "3h"),
            ("BrazeUninstallsSpike", "30m"),
            ("BrazeHourlySessionsDrop", "10m"),
            ("BrazeKpiDataStale", "1h"),
            ("BrazePollsFailing", "30m"),
            ("BrazeExporterDown", "10m"),
            ("BrazeRateLimited", "5m"),  # no `for:` in the file
            ("BrazeApiKeyRejected", "1m"),  # no `for:` in the file
        )
    ],
]


@pytest.mark.parametrize(("path", "value", "change"), OVERRIDES, ids=[o[0] for o in OVERRIDES])
def test_each_override_changes_exactly_its_rule(
    chart: Chart, path: str, value: object, change: tuple[tuple[str, str], str]
) -> None:
    rendered = render(chart, with_value(f"prometheusRule.{path}", value))
    assert changed_rule_fields(rule_groups(rendered)) == dict([change])


def test_overrides_scenario_changes_thresholds_for_and_labels(chart: Chart) -> None:
    rendered = render(chart, scenario_values("overrides"))
    changes = changed_rule_fields(rule_groups(rendered))
    assert changes.pop((THRESHOLD_RECORDS["weeklyDropRatio"], "expr")) == "vector(0.2)"
    assert changes.pop((THRESHOLD_RECORDS["dailyDropRatio"], "expr")) == "vector(0.1)"
    assert changes.pop((THRESHOLD_RECORDS["dauWeeklyDropRatio"], "expr")) == "vector(0.25)"
    assert changes.pop((THRESHOLD_RECORDS["uninstallsSpikeMinCount"], "expr")) == "vector(50)"
    assert changes.pop((THRESHOLD_RECORDS["hourlySessionsDropMinCount"], "expr")) == "vector(500)"
    assert changes.pop((THRESHOLD_RECORDS["staleAfterHours"], "expr")) == "vector(48)"
    assert changes.pop((THRESHOLD_RECORDS["hourlyStaleAfterHours"], "expr")) == "vector(6)"
    assert changes.pop(("BrazeMonthlyActiveUsersWeeklyDrop", "for")) == "2h"
    assert changes.pop(("BrazeHourlySessionsDrop", "for")) == "15m"
    assert changes.pop(("BrazeRateLimited", "for")) == "5m"
    alerts = {rule_id(r): r for g in rules_file_groups() for r in g["rules"] if "alert" in r}
    for (rule, field), labels in changes.items():
        assert field == "labels", rule
        # ruleLabels are added to every alert and win over the file's own labels.
        assert labels == {**alerts[rule]["labels"], "team": "growth", "severity": "page"}
    assert set(rule for rule, _ in changes) == set(alerts)


def test_prometheus_rule_carries_the_additional_labels(scenario: Rendered) -> None:
    additional = scenario.values["prometheusRule"]["additionalLabels"]
    for rule in scenario.all("PrometheusRule"):
        assert additional.items() <= rule["metadata"]["labels"].items()


def test_rendered_rules_pass_promtool(scenario: Rendered, tmp_path: Path) -> None:
    rules = scenario.all("PrometheusRule")
    assert len(rules) == scenario.values["prometheusRule"]["enabled"]
    promtool = required_tool("promtool", "Debian package prometheus")
    for rule in rules:
        rules_file = tmp_path / "rules.yml"
        rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
        result = subprocess.run(
            [promtool, "check", "rules", rules_file], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_config_map_carries_the_file_verbatim(scenario: Rendered) -> None:
    values = scenario.values["dashboard"]
    dashboards = [
        o for o in scenario.all("ConfigMap") if o["metadata"]["name"] != scenario.fullname
    ]
    assert len(dashboards) == values["enabled"]
    for dashboard in dashboards:
        metadata = dashboard["metadata"]
        assert metadata["name"] == f"{scenario.fullname}-dashboard"
        assert metadata["namespace"] == (values["namespace"] or NAMESPACE)
        assert metadata["labels"][values["label"]] == values["labelValue"]
        assert dashboard["data"] == {"braze-exporter.json": DASHBOARD_FILE.read_text()}
        annotations = metadata.get("annotations", {})
        if values["folder"]:
            assert annotations[values["folderAnnotation"]] == values["folder"]
        else:
            assert values["folderAnnotation"] not in annotations


def test_dashboard_label_is_configurable(chart: Chart) -> None:
    values = {"dashboard": {"label": "grafana.com/dashboard", "labelValue": "braze"}}
    rendered = render(chart, values)
    dashboard = rendered.one("ConfigMap", f"{FULLNAME}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana.com/dashboard"] == "braze"
    assert "grafana_dashboard" not in dashboard["metadata"]["labels"]


# --- notes and documentation ---------------------------------------------------------------


def test_notes_say_how_to_reach_metrics_and_what_is_enabled(scenario: Rendered) -> None:
    notes = scenario.notes
    assert f"port-forward svc/{scenario.fullname} 9877:{PORT}" in notes
    assert "/metrics" in notes
    for feature, key in (
        ("ServiceMonitor", "serviceMonitor"),
        ("PrometheusRule", "prometheusRule"),
        ("Grafana dashboard", "dashboard"),
    ):
        state = "enabled" if scenario.values[key]["enabled"] else "disabled"
        assert f"{feature}: {state}" in notes


def value_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the documented values: nested maps are listed key by key, except
    free-form ones (resources, security contexts...), documented as one value."""
    whole = {"config.workspaces", "prometheusRule.for"}
    for key, value in values.items():
        path = prefix + key
        nested = isinstance(value, dict) and value and path not in whole
        if nested and not path.endswith(("Context", "resources", "Probe")):
            yield from value_paths(value, path + ".")
        else:
            yield path


def test_readme_documents_every_value(chart: Chart) -> None:
    readme = (CHART / "README.md").read_text()
    rows = set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))
    assert set(value_paths(chart.values)) <= rows
    assert "helm install" in readme


def test_lint_and_render_fail_on_a_broken_chart(tmp_path: Path) -> None:
    """The checks above can fail: a chart whose template is broken is reported."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Chart.yaml").write_text("apiVersion: v2\nname: broken\nversion: 0.1.0\n")
    (broken / "templates").mkdir()
    (broken / "templates" / "cm.yaml").write_text("{{ .Values.missing.key }}\n")
    assert lint(broken)["errors"] or any(m["severity"] == 3 for m in lint(broken)["messages"])
    with Chart.load(broken) as loaded, pytest.raises(HelmError):
        loaded.render(values={}, name=RELEASE)
