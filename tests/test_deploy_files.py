"""docker-compose.yml, Dockerfile, .dockerignore and deploy/: parsed and checked against the code they run.

No Docker engine is needed: the files are read as data, their commands are compared with
stack.commands (what `make run` and the tests start), and their health checks are run against
a live stack.
"""
from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from contract.settings import PROJECT_ROOT, Settings
from contract.tasks import celery_config, model_id, queue_for_model
from deploy.requirements import requirements
from stack.commands import web_command, worker_command

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
REDIS_URL = "redis://redis:6379/0"
ENV_EXAMPLE = PROJECT_ROOT / ".env.example"


# -- Dockerfile parsing -------------------------------------------------------------------------

def dockerfile_stages() -> dict[str, dict]:
    """Stage name -> {"from": base, "lines": [(INSTRUCTION, arguments)]}, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (PROJECT_ROOT / "Dockerfile").read_text())
    stages: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            base, name = re.split(r"\s+as\s+", args, flags=re.I)
            current = stages[name] = {"from": base, "lines": []}
        elif current is not None:
            current["lines"].append((instruction, " ".join(args.split())))
    return stages


STAGES = dockerfile_stages()


def chain(stage: str) -> list[str]:
    """The stage and the stages it is built on, nearest first."""
    names = [stage]
    while STAGES[names[-1]]["from"] in STAGES:
        names.append(STAGES[names[-1]]["from"])
    return names


def instructions(stage: str, kind: str) -> list[str]:
    """Arguments of every `kind` instruction that shapes `stage`, base stages first."""
    return [args for name in reversed(chain(stage)) for ins, args in STAGES[name]["lines"] if ins == kind]


def exec_form(args: str) -> list[str]:
    """A JSON-array CMD/ENTRYPOINT as a list."""
    return yaml.safe_load(args)


# -- compose -----------------------------------------------------------------------------------

def duration_seconds(text: str) -> float:
    """A compose duration such as 1m30s."""
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([hms])", text))


def without_python(command: list[str]) -> list[str]:
    """stack.commands' argv without `python -m`, as a container runs it."""
    assert command[:2] == [sys.executable, "-m"]
    return command[2:]


def test_compose_has_the_five_services():
    assert set(SERVICES) == {"redis", "web", "worker", "worker-gpu", "flower"}
    for name in ("web", "worker", "worker-gpu"):
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_redis_persists_its_append_only_file_and_never_evicts():
    redis = SERVICES["redis"]
    assert re.fullmatch(r"redis:\d+(\.\d+)*-alpine", redis["image"]), "pinned Redis image"
    command = " ".join(redis["command"])
    for option in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert option in command
    assert "redis-data:/data" in redis["volumes"] and "redis-data" in COMPOSE["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_web_runs_the_same_gunicorn_command_as_make_run():
    web = SERVICES["web"]
    expected = without_python(web_command(Settings(web_workers=4), "0.0.0.0", 8000))
    command = web["command"]
    assert command[command.index("--workers") + 1] == "${WEB_WORKERS:-4}"
    command[command.index("--workers") + 1] = "4"
    assert command == ["python", "-m", *expected]
    assert command[-1] == "web:create_app()"
    assert web["build"]["target"] == "web"
    assert web["environment"]["REDIS_URL"] == REDIS_URL
    assert web["environment"]["SECRET_KEY"].startswith("${SECRET_KEY:?"), "refuse to start without a shared key"
    assert "/healthz" in " ".join(web["healthcheck"]["test"]), "liveness: the web answers, whatever Redis does"


@pytest.mark.parametrize(("service", "name"), [("worker", "worker"), ("worker-gpu", "gpu")])
def test_workers_run_the_same_celery_command_as_make_run(service, name):
    spec = SERVICES[service]
    expected = without_python(worker_command(Settings(), name))
    at = expected.index("--concurrency")
    del expected[at:at + 2]  # the app's config sets it: MAX_BATCH threads, one model per process
    assert spec["command"] == expected
    assert spec["command"][:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert importlib.util.find_spec("worker.celery_app") is not None
    threads = celery_config(Settings(worker_pool="threads", max_batch=48))
    assert (threads["worker_pool"], threads["worker_concurrency"]) == ("threads", 48)
    assert spec["build"]["target"] == "worker"
    assert spec["environment"]["REDIS_URL"] == REDIS_URL
    assert "hf-cache:/cache/huggingface" in spec["volumes"] and "hf-cache" in COMPOSE["volumes"]
    assert spec["env_file"] == ".env"
    assert duration_seconds(spec["stop_grace_period"]) >= 60, "long enough for a warm shutdown"
    assert f'"{name}@$$HOSTNAME"' in spec["healthcheck"]["test"][1]


def test_cpu_worker_scales_and_gpu_worker_reserves_one_gpu():
    cpu, gpu = SERVICES["worker"], SERVICES["worker-gpu"]
    assert "profiles" not in cpu and "container_name" not in cpu and "ports" not in cpu, "docker compose --scale"
    assert cpu["environment"]["DEVICE"] == "cpu" and cpu["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    ]
    assert gpu["environment"]["DEVICE"] == "cuda"  # the engine then loads the model in bf16
    assert gpu["build"]["args"]["TORCH_VARIANT"].startswith("${GPU_TORCH_VARIANT:-cu")
    assert gpu["environment"]["MODEL_NAME"] == "${GPU_MODEL_NAME:-meta-llama/Llama-3.2-1B}"


@pytest.mark.parametrize("service", ["worker", "worker-gpu"])
def test_each_worker_has_cpu_and_memory_limits_and_as_many_torch_threads(service):
    spec = SERVICES[service]
    limits = spec["deploy"]["resources"]["limits"]
    assert re.fullmatch(r"\$\{\w+:-\d+g\}", limits["memory"])
    cpus = re.fullmatch(r"\$\{(\w+):-(\d+)\}", limits["cpus"])
    assert cpus, "a variable with a whole number of CPUs as its default"
    # os.cpu_count() inside a container sees the host's cores, not the limit: the threads are set explicitly
    assert spec["environment"]["TORCH_THREADS"] == limits["cpus"]


def test_flower_is_pinned_and_watches_the_broker():
    flower = SERVICES["flower"]
    assert re.fullmatch(r"mher/flower:\d+(\.\d+)+", flower["image"])
    assert flower["command"] == ["celery", "--broker", REDIS_URL, "flower", "--port=5555"]
    assert flower["ports"] == ["127.0.0.1:5555:5555"], "monitoring stays on the host"


def test_every_setting_comes_from_env_and_is_documented():
    text = (PROJECT_ROOT / "docker-compose.yml").read_text()
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.M))
    assert {"HF_TOKEN", "MODEL_NAME", "SECRET_KEY"} <= documented
    used = set(re.findall(r"\$\{(\w+)", text))
    assert used <= documented, f"undocumented: {used - documented}"
    known = set(Settings().to_env()) | used
    assert documented <= known, f"neither a setting nor a compose variable: {documented - known}"
    for name in ("web", "worker", "worker-gpu"):
        assert SERVICES[name]["env_file"] == ".env"
    # unset MODEL_NAME means the demo model, in the image as in a checkout
    assert Settings().model_name == str(PROJECT_ROOT / "models" / "demo")
    assert "COPY models/ models/" in (PROJECT_ROOT / "Dockerfile").read_text()


# -- Dockerfile --------------------------------------------------------------------------------

def test_dockerfile_is_multi_stage_slim_and_unprivileged():
    assert {"web", "worker"} <= set(STAGES) and len(STAGES) >= 4
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.\d+-slim", (PROJECT_ROOT / "Dockerfile").read_text())
    for target in ("web", "worker"):
        users = instructions(target, "USER")
        assert users and users[-1] not in ("root", "0"), f"{target} runs as root"
        assert "base" in chain(target)


def test_torch_is_cpu_by_default_and_cuda_by_build_argument():
    args = instructions("worker-deps", "ARG")
    assert "TORCH_VARIANT=cpu" in args
    assert any("${TORCH_VARIANT}" in run and "torch" in run for run in instructions("worker-deps", "RUN"))


def test_torch_has_its_own_layer_before_the_projects_other_dependencies():
    lines = STAGES["worker-deps"]["lines"]
    runs = [i for i, (ins, _) in enumerate(lines) if ins == "RUN"]
    torch_run = next(i for i in runs if "${TORCH_SPEC}" in lines[i][1])
    deps_run = next(i for i in runs if "requirements.py worker" in lines[i][1])
    assert torch_run < deps_run, "torch first, in a RUN of its own"
    assert "requirements" not in lines[torch_run][1]
    copies = [i for i, (ins, _) in enumerate(lines) if ins == "COPY"]
    assert copies and torch_run < min(copies), "editing pyproject.toml must not invalidate the torch layer"


def test_web_image_has_no_torch():
    web_sources = {line.split()[0].split("=")[1] for line in instructions("web", "COPY") if line.startswith("--from=")}
    assert web_sources == {"web-deps"}
    assert not any("torch" in run for name in chain("web") + ["web-deps"] for run in instructions(name, "RUN"))
    wanted = " ".join(requirements(PROJECT_ROOT / "pyproject.toml", ["web"]))
    assert "flask" in wanted and "gunicorn" in wanted
    assert not re.search(r"torch|transformers", wanted)
    assert "torch" in " ".join(requirements(PROJECT_ROOT / "pyproject.toml", ["worker"]))


def test_web_image_code_imports_without_torch_or_the_worker(tmp_path):
    """Only the folders the web stage copies, with torch, transformers, engine and worker made unimportable."""
    for line in instructions("web", "COPY"):
        if not line.startswith("--from="):
            source = line.split()[0].rstrip("/")
            shutil.copytree(PROJECT_ROOT / source, tmp_path / source)
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "for name in ('torch', 'transformers', 'engine', 'worker', 'stack'): sys.modules[name] = None\n"
        "import web\n"
        f"assert web.__file__.startswith({str(tmp_path)!r}), web.__file__\n"
        "app = web.create_app()\n"
        "rules = {r.rule for r in app.url_map.iter_rules()}\n"
        "assert {'/api/health', '/api/jobs', '/metrics', '/healthz', '/readyz'} <= rules, rules\n"
    )
    env = dict(os.environ, REDIS_URL="redis://127.0.0.1:9/0", SECRET_KEY="x", DATA_DIR=str(tmp_path / "data"))
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_image_commands_match_compose():
    web_cmd = exec_form(instructions("web", "CMD")[-1])
    compose_web = list(SERVICES["web"]["command"])
    compose_web[compose_web.index("--workers") + 1] = "4"
    assert web_cmd == compose_web
    assert exec_form(instructions("worker", "CMD")[-1]) == SERVICES["worker"]["command"]


def test_copied_paths_exist_and_are_not_ignored():
    ignored = [p.strip() for p in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith("#")]
    for required in (".env", ".venv", ".git", "data"):
        assert required in ignored
    for stage in STAGES:
        for line in instructions(stage, "COPY"):
            if line.startswith("--from="):
                continue
            for source in line.split()[:-1]:
                path = source.rstrip("/")
                assert (PROJECT_ROOT / path).exists(), path
                assert not any(fnmatch.fnmatch(path, p) or path.startswith(p + "/") for p in ignored), path


# -- Kubernetes and KEDA -----------------------------------------------------------------------

def load_all(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((PROJECT_ROOT / "deploy" / name).read_text()) if d]


def test_keda_scales_each_worker_deployment_on_its_model_queue():
    deployments = {d["metadata"]["name"]: d for d in load_all("k8s-worker.yaml") if d["kind"] == "Deployment"}
    scaled = [d for d in load_all("keda-scaledobject.yaml") if d["kind"] == "ScaledObject"]
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == set(deployments)
    for obj in scaled:
        pod = deployments[obj["spec"]["scaleTargetRef"]["name"]]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        [trigger] = obj["spec"]["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == queue_for_model(model_id(env["MODEL_NAME"]))
        assert int(trigger["metadata"]["listLength"]) >= 1
        if env["MODEL_NAME"] == "/app/models/demo":  # the default model: a warm worker, and /readyz needs one
            assert obj["spec"]["minReplicaCount"] >= 1
        elif obj["spec"]["minReplicaCount"] == 0:  # scale from zero: the web must queue jobs with no worker yet
            assert CONFIG["ACCEPT_JOBS_WITHOUT_WORKERS"] == "1"
        assert container["command"][:4] == ["celery", "-A", "worker.celery_app", "worker"]
        assert pod["terminationGracePeriodSeconds"] >= 60
        assert pod["securityContext"]["runAsNonRoot"] is True
        if env["DEVICE"] == "cuda":
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


MANIFESTS = sorted(p.name for p in (PROJECT_ROOT / "deploy").glob("*.yaml"))
CONFIG = next(d for d in load_all("k8s-config.yaml") if d["kind"] == "ConfigMap")["data"]
SECRET = next(d for d in load_all("k8s-config.yaml") if d["kind"] == "Secret")
CRD_GROUPS = {"keda.sh"}  # custom resources: no bundled schema; test_keda_scales_each_worker_deployment checks them


def resources(kind: str) -> list[dict]:
    return [d for name in MANIFESTS for d in load_all(name) if d["kind"] == kind]


def pod_containers() -> list[tuple[str, dict]]:
    return [(d["metadata"]["name"], c) for kind in ("Deployment", "StatefulSet") for d in resources(kind)
            for c in d["spec"]["template"]["spec"]["containers"]]


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_manifest_passes_kubernetes_validate(name):
    version = kubernetes_validate.latest_version()
    for doc in load_all(name):
        if doc["apiVersion"].split("/")[0] in CRD_GROUPS:
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # once bundled, validate it here too
                kubernetes_validate.validate(doc, version, strict=True)
            continue
        kubernetes_validate.validate(doc, version, strict=True)


def test_kubernetes_validate_refuses_a_misspelt_field():
    [web] = [d for d in load_all("k8s-web.yaml") if d["kind"] == "Deployment"]
    web["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = web["spec"]["template"]["spec"][
        "containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(web, kubernetes_validate.latest_version(), strict=True)


def test_config_map_holds_valid_settings_and_the_secret_holds_the_secrets():
    secrets = {"SECRET_KEY", "DASHBOARD_TOKEN", "HF_TOKEN"}
    assert set(SECRET["stringData"]) == secrets and not secrets & set(CONFIG)
    known = set(Settings().to_env())
    assert set(CONFIG) <= known, set(CONFIG) - known
    settings = Settings.from_env(CONFIG, dotenv=False)
    assert (settings.log_format, settings.trusted_proxies) == ("json", 1)
    assert CONFIG["ACCEPT_JOBS_WITHOUT_WORKERS"] == "1"
    for name, container in pod_containers():
        if name != "redis":
            assert {"configMapRef": {"name": "autoregress-config"}} in container["envFrom"], name


def test_web_deployment_probes_healthz_and_readyz_and_runs_the_image_command():
    [deployment] = [d for d in load_all("k8s-web.yaml") if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert port == 8000 and "0.0.0.0:8000" in instructions("web", "CMD")[-1]
    assert "command" not in container and "args" not in container, "the image's CMD, checked against compose"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"secretRef": {"name": SECRET["metadata"]["name"]}} in container["envFrom"]
    assert deployment["spec"]["replicas"] >= 2 and pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp", "/app/data"}


def test_service_and_ingress_route_every_public_page_and_no_probe_or_metrics():
    from web import create_app

    [deployment] = [d for d in load_all("k8s-web.yaml") if d["kind"] == "Deployment"]
    [service] = [d for d in load_all("k8s-web.yaml") if d["kind"] == "Service"]
    [ingress] = resources("Ingress")
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert {p["backend"]["service"]["name"] for p in paths} == {service["metadata"]["name"]}

    def routed(url: str) -> bool:
        return any(url == p["path"] if p["pathType"] == "Exact" else
                   url == p["path"] or url.startswith(p["path"].rstrip("/") + "/") for p in paths)

    app = create_app({"SETTINGS": Settings(redis_url="redis://127.0.0.1:9/0", secret_key="x")})
    internal = {"/metrics", "/healthz", "/readyz"}
    for rule in app.url_map.iter_rules():
        url = re.sub(r"<[^>]+>", "x", rule.rule)
        assert routed(url) == (rule.rule not in internal), rule.rule


def test_redis_statefulset_keeps_its_append_only_file_on_a_volume():
    [statefulset] = resources("StatefulSet")
    [service] = [d for d in load_all("k8s-redis.yaml") if d["kind"] == "Service"]
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["command"] == SERVICES["redis"]["command"], "same persistence as compose: AOF, noeviction"
    assert container["image"] == SERVICES["redis"]["image"]
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"
    assert CONFIG["REDIS_URL"] == f"redis://{service['metadata']['name']}:6379/0"
    assert container["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]


def test_kubernetes_workers_get_as_many_torch_threads_as_their_cpu_limit():
    workers = [(name, c) for name, c in pod_containers() if name.startswith("autoregress-worker")]
    assert len(workers) == 2
    for name, container in workers:
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["TORCH_THREADS"] == container["resources"]["limits"]["cpu"], name
        assert "memory" in container["resources"]["limits"], name


# -- health checks, run for real ---------------------------------------------------------------

def compose_shell(test: list[str]) -> str:
    """A CMD-SHELL health check as the container's shell gets it ($$ is compose's escaped $)."""
    assert test[0] == "CMD-SHELL"
    return test[1].replace("$$", "$")


@pytest.mark.integration
def test_worker_health_check_pings_its_own_worker(live_stack):
    check = compose_shell(SERVICES["worker"]["healthcheck"]["test"]).replace('"worker@', '"w1@')
    env = dict(os.environ, REDIS_URL=live_stack.settings.redis_url, HOSTNAME=socket.gethostname(),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    assert subprocess.run(["sh", "-c", check], env=env, capture_output=True, timeout=60).returncode == 0
    env["HOSTNAME"] = "no-such-host"
    assert subprocess.run(["sh", "-c", check], env=env, capture_output=True, timeout=60).returncode != 0


@pytest.mark.integration
def test_web_health_check_reads_healthz(live_stack):
    test = SERVICES["web"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    argv = [sys.executable] + [a.replace("http://127.0.0.1:8000", live_stack.url) for a in test[2:]]
    assert subprocess.run(argv, capture_output=True, timeout=30).returncode == 0


def test_workers_may_finish_a_job_that_runs_to_its_deadline_before_they_are_killed():
    deadline = Settings().job_deadline_seconds  # the longest a running job lasts
    for service in ("worker", "worker-gpu"):
        assert duration_seconds(SERVICES[service]["stop_grace_period"]) >= deadline, service
    for document in yaml.safe_load_all((PROJECT_ROOT / "deploy" / "k8s-worker.yaml").read_text()):
        if document and document.get("kind") == "Deployment":
            grace = document["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            assert grace >= deadline, document["metadata"]["name"]
