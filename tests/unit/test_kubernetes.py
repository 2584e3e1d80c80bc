"""deploy/kubernetes/ holds valid manifests that fit together: every document passes Kubernetes'
own JSON schemas (bundled by kubernetes-validate, strict: no unknown field) for every version
the validator knows, the ConfigMap's YAML passes ``iiif-shim check-config``, and the numbers
that must agree do (ports, probes, grace period against shutdown_timeout, processes from the
CPU limit, memory limit against what the processes may hold, the Redis URL against its
Service), the Secret reaches the shim (``${REDIS_PASSWORD}``, ``purge_token_file``) and Redis,
each pod can read the Secret files it mounts, no secret is on a command line (Redis's own
start is run here with a real redis-server), and the Ingress serves HTTPS with a certificate
from cert-manager."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import ValidationError, all_versions

from iiif_shim.config.settings import Settings, parse_settings
from iiif_shim.process.supervisor import KILL_GRACE
from tests.support import ROOT, free_port, need_tool, wait_until

FOLDER = ROOT / "deploy" / "kubernetes"
MiB = 1024 * 1024
# what a worker holds besides the budget and its caches (interpreter, libraries, buffers: about
# 150 MB measured after a few renders), and the supervisor (about 50 MB)
WORKER_OVERHEAD = 160 * MiB
SUPERVISOR = 64 * MiB


def versions() -> list[str]:
    return sorted(set(all_versions()), key=lambda v: tuple(int(p) for p in v.split(".")))


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(FOLDER.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                yield path.name, doc


def find(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def cpu(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 10**3, "M": 10**6, "G": 10**9}
    found = re.fullmatch(r"(\d+)([KMG]i|[kMG])?", quantity)
    assert found, quantity
    return int(found.group(1)) * units.get(found.group(2) or "", 1)


def redis_bytes(value: str) -> int:
    found = re.fullmatch(r"(\d+)(kb|mb|gb)", value.lower())
    assert found, value
    return int(found.group(1)) * {"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}[found.group(2)]


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.fixture(scope="module")
def container() -> dict[str, Any]:
    pod = find("Deployment", "iiif-shim")["spec"]["template"]["spec"]
    (shim,) = pod["containers"]
    assert isinstance(shim, dict)
    return shim


def secret_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment variables that come from a Secret, with their values."""
    found = {}
    for env in container.get("env", []):
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            found[env["name"]] = find("Secret", ref["name"])["stringData"][ref["key"]]
    return found


def secret_files(container: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The folders where the shim's container mounts a Secret: path -> file name -> content."""
    pod = find("Deployment", "iiif-shim")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    found = {}
    for mount in container["volumeMounts"]:
        source = volumes[mount["name"]].get("secret")
        if source is None:
            continue
        data = find("Secret", source["secretName"])["stringData"]
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        found[mount["mountPath"]] = {item["path"]: data[item["key"]] for item in items}
    return found


@pytest.fixture(scope="module")
def pod_view(
    tmp_path_factory: pytest.TempPathFactory, container: dict[str, Any]
) -> tuple[Path, dict[str, str]]:
    """shim.yaml as the pod reads it, and its environment: the Secret's files written to a
    folder here (the mount path moved there in shim.yaml), its variables set."""
    folder = tmp_path_factory.mktemp("kubernetes")
    text = find("ConfigMap", "iiif-shim-config")["data"]["shim.yaml"]
    for i, (mount, files) in enumerate(secret_files(container).items()):
        assert mount in text, f"shim.yaml names nothing in {mount}"
        here = folder / f"secret-{i}"
        here.mkdir()
        for name, content in files.items():
            (here / name).write_text(content)
        text = text.replace(mount, str(here))
    path = folder / "shim.yaml"
    path.write_text(text)
    return path, secret_env(container)


@pytest.fixture(scope="module")
def shim_yaml(pod_view: tuple[Path, dict[str, str]]) -> Path:
    return pod_view[0]


@pytest.fixture(scope="module")
def settings(pod_view: tuple[Path, dict[str, str]]) -> Settings:
    path, env = pod_view
    return parse_settings(yaml.safe_load(path.read_text()), path.parent, str(path), environ=env)


def test_every_manifest_passes_the_kubernetes_schemas() -> None:
    known = versions()
    assert known[0] <= "1.25.0" and len(known) >= 10  # the bundle the checks below rely on
    kinds = set()
    for name, doc in documents():
        kinds.add((doc["apiVersion"], doc["kind"]))
        for version in known:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except ValidationError as exc:
                pytest.fail(f"{name}: {doc['kind']} against Kubernetes {version}: {exc.message}")
    assert {
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("networking.k8s.io/v1", "Ingress"),
    } <= kinds


def test_the_validator_refuses_what_kubernetes_would() -> None:
    """The check above can fail: a misspelt field and a wrong type are both reported."""
    deployment = find("Deployment", "iiif-shim")
    pod = deployment["spec"]["template"]["spec"]
    misspelt = {**pod, "containers": [{**pod["containers"][0], "readinesProbe": {}}]}
    wrong = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    for bad in (
        {
            **deployment,
            "spec": {
                **deployment["spec"],
                "template": {**deployment["spec"]["template"], "spec": misspelt},
            },
        },
        wrong,
    ):
        with pytest.raises(ValidationError):
            kubernetes_validate.validate(bad, versions()[-1], strict=True)


def test_the_configmap_yaml_passes_check_config(pod_view: tuple[Path, dict[str, str]]) -> None:
    shim_yaml, env = pod_view
    done = subprocess.run(
        [sys.executable, "-m", "iiif_shim", "check-config", str(shim_yaml)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{shim_yaml}: OK") and "warning" not in done.stdout, done.stdout
    for value in env.values():
        assert value not in done.stdout + done.stderr


def test_the_secrets_reach_the_shim_and_redis(
    container: dict[str, Any], settings: Settings
) -> None:
    """The Redis password goes to the shim's cache.redis_password through ${REDIS_PASSWORD}
    and to Redis (and its probe's redis-cli), the purge token through a file; none of them is
    written in the ConfigMap."""
    secret = find("Secret", "iiif-shim-secrets")["stringData"]
    env = secret_env(container)
    assert env == {"REDIS_PASSWORD": secret["redis-password"]}
    assert settings.cache.redis is not None
    assert urlsplit(settings.cache.redis).password is None  # apart, as it is: no encoding
    assert settings.cache.redis_password == secret["redis-password"]
    assert settings.cache.purge_token == secret["purge-token"]
    shim_yaml = find("ConfigMap", "iiif-shim-config")["data"]["shim.yaml"]
    assert "${REDIS_PASSWORD}" in shim_yaml and "purge_token_file:" in shim_yaml
    for value in secret.values():
        assert value not in shim_yaml
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "secrets"]
    assert mount["readOnly"] is True
    redis = find("Deployment", "iiif-shim-redis")["spec"]["template"]["spec"]
    (server,) = redis["containers"]
    assert secret_env(server) == {
        "REDIS_PASSWORD": secret["redis-password"],
        "REDISCLI_AUTH": secret["redis-password"],
    }
    assert server["readinessProbe"]["exec"]["command"][0] == "redis-cli"


def test_the_ingress_serves_https_with_a_certificate_from_cert_manager() -> None:
    ingress = find("Ingress", "iiif-shim")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"]
    assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"  # ingress-nginx: HTTP/2 over TLS by default
    (tls,) = spec["tls"]
    assert tls["secretName"]  # the TLS Secret cert-manager fills and renews
    hosts = {rule["host"] for rule in spec["rules"]}
    assert hosts == set(tls["hosts"])
    service = find("Service", "iiif-shim")
    (port,) = service["spec"]["ports"]
    for rule in spec["rules"]:
        (path,) = rule["http"]["paths"]
        assert (path["path"], path["pathType"]) == ("/", "Prefix")
        backend = path["backend"]["service"]
        assert backend["name"] == "iiif-shim" and backend["port"] == {"name": port["name"]}


def test_the_deployment_runs_that_config_with_processes_from_its_cpu_limit(
    container: dict[str, Any], settings: Settings
) -> None:
    pod = find("Deployment", "iiif-shim")["spec"]["template"]["spec"]
    args = container["args"]
    assert args[0] == "serve"
    config = Path(option(args, "--config"))
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == config.parent]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "iiif-shim-config" and config.name == "shim.yaml"
    # --processes is the CPU limit, given by the downward API (rounded up to a whole CPU)
    assert option(args, "--processes") == "$(IIIF_SHIM_PROCESSES)"
    (env,) = [e for e in container["env"] if e["name"] == "IIIF_SHIM_PROCESSES"]
    field = env["valueFrom"]["resourceFieldRef"]
    assert field == {"containerName": container["name"], "resource": "limits.cpu", "divisor": "1"}
    assert settings.server.host == "0.0.0.0"  # reachable from the pod's address
    (port,) = container["ports"]
    assert port["containerPort"] == settings.server.port
    assert settings.server.workers >= 1  # the default would count the node's CPUs, not the pod's


def test_probes_and_termination_match_the_shim(
    container: dict[str, Any], settings: Settings
) -> None:
    pod = find("Deployment", "iiif-shim")["spec"]["template"]["spec"]
    port_name = container["ports"][0]["name"]
    ready, alive = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert (ready["path"], ready["port"]) == ("/health/ready", port_name)
    assert (alive["path"], alive["port"]) == ("/health", port_name)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = float(command[1])
    # the pod leaves the endpoints during the pause, then SIGTERM lets requests finish
    # (the supervisor kills a worker still draining KILL_GRACE seconds after shutdown_timeout)
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= pause + settings.server.shutdown_timeout + KILL_GRACE, (grace, pause)
    # the liveness probe gives a busy process time: several periods, not one slow answer
    assert container["livenessProbe"]["failureThreshold"] >= 3


def test_the_memory_limit_holds_every_process(
    container: dict[str, Any], settings: Settings
) -> None:
    limits = container["resources"]["limits"]
    processes = math.ceil(cpu(limits["cpu"]))
    # the budget is the whole server's (each process gets 1/N); the caches are per process
    per_worker = settings.cache.image_bytes + settings.cache.decoded_bytes + WORKER_OVERHEAD
    needed = settings.server.memory_budget + processes * per_worker + SUPERVISOR
    assert needed <= memory(limits["memory"]), (processes, needed)
    # requests equal limits: the HPA's percentages are of what each pod really has
    assert container["resources"]["requests"] == limits


def test_service_hpa_and_budget_point_at_the_shims_pods(container: dict[str, Any]) -> None:
    deployment = find("Deployment", "iiif-shim")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = find("Service", "iiif-shim")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    hpa = find("HorizontalPodAutoscaler", "iiif-shim")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "iiif-shim",
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and "cpu" in container["resources"]["requests"]
    assert hpa["spec"]["minReplicas"] >= 2  # a rolling update or a lost node keeps one serving
    budget = find("PodDisruptionBudget", "iiif-shim")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_redis_url_reaches_the_redis_service(settings: Settings) -> None:
    assert settings.cache.redis is not None
    url = urlsplit(settings.cache.redis)
    service = find("Service", url.hostname or "")
    (port,) = service["spec"]["ports"]
    assert port["port"] == (url.port or 6379)
    redis = find("Deployment", url.hostname or "")
    pod_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (server,) = redis["spec"]["template"]["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in server["ports"]}
    # a cache: nothing saved, LRU eviction, and maxmemory well inside the container's limit
    args = server["args"][1:]  # after the script that starts it (sh -c SCRIPT $0 ARGS...)
    assert option(args, "--save") == "" and option(args, "--appendonly") == "no"
    assert option(args, "--maxmemory-policy") == "allkeys-lru"
    limit = memory(server["resources"]["limits"]["memory"])
    assert redis_bytes(option(args, "--maxmemory")) <= 0.8 * limit
    # only the shim's pods may connect
    policy = find("NetworkPolicy", url.hostname or "")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    (rule,) = policy["spec"]["ingress"]
    shim_labels = find("Deployment", "iiif-shim")["spec"]["template"]["metadata"]["labels"]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= shim_labels.items()


def pods() -> Iterator[tuple[str, dict[str, Any]]]:
    for _, doc in documents():
        if doc["kind"] == "Deployment":
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def test_each_pod_can_read_the_secret_files_it_mounts() -> None:
    """A Secret's files belong to root, and to the pod's fsGroup when it has one (the kubelet
    makes them readable by that group); a pod that runs as another user needs the group bit
    and fsGroup, or the read bit for all (kubernetes/kubernetes#57923)."""
    mounted = 0
    for name, pod in pods():
        context = pod.get("securityContext", {})
        uid, fs_group = context.get("runAsUser", 0), context.get("fsGroup")
        for volume in pod.get("volumes", []):
            source = volume.get("secret")
            if source is None:
                continue
            default = source.get("defaultMode", 0o644)
            for item in source.get("items") or [{"path": "(every key)"}]:
                mode = item.get("mode", default)
                readable = uid == 0 or mode & 0o004 or (fs_group is not None and mode & 0o040)
                assert readable, f"{name}: uid {uid} cannot read {item['path']} (mode {mode:o})"
                assert not mode & 0o007, f"{name}: {item['path']} is readable by others"
                mounted += 1
    assert mounted  # the shim's purge token at least


def expanded(container: dict[str, Any]) -> str:
    """The container's command and arguments as the kubelet hands them over: each $(VAR)
    replaced by its value (a Secret's too)."""
    values = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    values.update(secret_env(container))
    words = [*container.get("command", []), *container.get("args", [])]
    return re.sub(r"\$\((\w+)\)", lambda m: values.get(m.group(1), m.group(0)), " ".join(words))


def test_no_secret_is_on_a_command_line() -> None:
    secrets = find("Secret", "iiif-shim-secrets")["stringData"].values()
    for name, pod in pods():
        for container in pod["containers"]:
            line = expanded(container)
            assert not [s for s in secrets if s in line], f"{name}: a secret in its command line"


def test_redis_starts_with_the_password_from_its_environment(tmp_path: Path) -> None:
    """The Redis container's own command, run here (its folder and address moved): Redis then
    requires the password, and no process's command line holds it."""
    redis = find("Deployment", "iiif-shim-redis")["spec"]["template"]["spec"]
    (server,) = redis["containers"]
    assert server["command"] == ["sh", "-c"]
    script, *args = server["args"]
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    assert "/run/redis-auth/redis.conf" in script and mounts["auth"] == "/run/redis-auth"
    binary = need_tool("redis-server", "/usr/bin/redis-server")
    cli = need_tool("redis-cli", "/usr/bin/redis-cli")
    script = script.replace("/run/redis-auth", str(tmp_path)).replace("redis-server ", f"{binary} ")
    port = free_port()
    password = secret_env(server)["REDIS_PASSWORD"]
    moved = ["--bind", "127.0.0.1", "--port", str(port), "--dir", str(tmp_path)]
    env = {"PATH": os.environ["PATH"], "REDIS_PASSWORD": password}
    proc = subprocess.Popen(
        ["sh", "-c", script, *args, *moved],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def ping(auth: str | None) -> str:
            extra = {"REDISCLI_AUTH": auth} if auth else {}
            done = subprocess.run(
                [cli, "-p", str(port), "ping"],
                capture_output=True,
                text=True,
                timeout=10,
                env={**os.environ, **extra},
            )
            return done.stdout + done.stderr

        wait_until(lambda: "PONG" in ping(password), "redis answers with the password")
        assert "NOAUTH" in ping(None)
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        assert "redis-server" in cmdline or binary in cmdline, cmdline
        assert password not in cmdline
        assert (tmp_path / "redis.conf").stat().st_mode & 0o077 == 0  # umask 077
    finally:
        proc.terminate()
        proc.wait(timeout=10)
