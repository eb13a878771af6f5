"""prefect.yaml and deployments/settings/: read and checked here; the slow test
registers every deployment on a real local Prefect server and runs the
pipeline deployment through a process worker against the SIMULATED model
server (a test double: no model inside)."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import BaseModel

from coool.settings import ROLE_DEFAULTS, ROLES, RoleSettings, ServerSettings, Settings, load_settings
from coool.sim.testing import free_port
from coool.submission import read_submission, validate

REPO = Path(__file__).resolve().parents[2]
PREFECT_YAML = REPO / "prefect.yaml"
SETTINGS_DIR = REPO / "deployments" / "settings"
SETTINGS_FILES = ("local-sim.yaml", "gpu-single-node.yaml", "gpu-single-node-venv.yaml", "gpu-cluster.yaml")
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
BIN = Path(sys.executable).parent

# Every flow and the deployment name it gets on the docker pool; "-local" on the process pool.
FLOWS = {
    "flows/pipeline.py:pipeline_flow": "coool-pipeline",
    "flows/frames.py:frames_flow": "frames",
    "flows/caption.py:caption_flow": "caption",
    "flows/detect.py:detect_flow": "detect",
    "flows/describe.py:describe_flow": "describe",
    "flows/describe.py:count_pass_flow": "count-pass",
    "flows/ensemble.py:ensemble_flow": "ensemble",
}
DOCKER_ENV = ("COOOL_DATA_ROOT", "COOOL_RESULTS_DIR", "COOOL_SETTINGS_FILE")


# ---- deployments/settings/*.yaml ------------------------------------------------


def unknown_keys(data: dict[str, Any], model: type[BaseModel], where: str = "") -> list[str]:
    """Keys pydantic would silently ignore (Settings has extra='ignore'): typos, mostly."""
    nested = {"server": ServerSettings, **{role: RoleSettings for role in ROLES}}
    found = []
    for key, value in data.items():
        path = f"{where}{key}"
        if key not in model.model_fields:
            found.append(path)
        elif isinstance(value, dict) and key in nested:
            found += unknown_keys(value, nested[key], f"{path}.")
    return found


@pytest.fixture
def settings_from(monkeypatch: pytest.MonkeyPatch):
    """Load a settings file exactly as the pipeline does, with no COOOL_* leaking in from the environment."""

    def load(name: str) -> Settings:
        for key in list(os.environ):
            if key.startswith("COOOL_"):
                monkeypatch.delenv(key)
        monkeypatch.setenv("COOOL_SETTINGS_FILE", str(SETTINGS_DIR / name))
        return load_settings()

    return load


def test_settings_folder_holds_the_three_files() -> None:
    assert sorted(p.name for p in SETTINGS_DIR.glob("*.yaml")) == sorted(SETTINGS_FILES)


@pytest.mark.parametrize("name", SETTINGS_FILES)
def test_settings_file_loads_with_known_keys_only(name: str, settings_from) -> None:
    raw = yaml.safe_load((SETTINGS_DIR / name).read_text(encoding="utf-8"))
    assert isinstance(raw, dict)
    assert not unknown_keys(raw, Settings), f"{name}: unknown keys {unknown_keys(raw, Settings)}"
    assert set(ROLES) <= set(raw), f"{name}: name every role"
    settings = settings_from(name)
    for role in ROLES:
        rs = settings.role(role)
        assert rs.model and rs.urls, role
        assert all(re.fullmatch(r"http://[\w.\-]+:\d+/v1", url) for url in rs.urls), rs.urls


def test_local_sim_points_every_role_at_one_simulated_server(settings_from) -> None:
    settings = settings_from("local-sim.yaml")
    for role in ROLES:
        rs = settings.role(role)
        assert rs.model == "sim-model"
        assert rs.urls == ["http://127.0.0.1:8000/v1"], "where `make sim` listens"
        assert rs.server.backend == "external"


def test_gpu_single_node_runs_each_role_from_its_image(settings_from) -> None:
    settings = settings_from("gpu-single-node.yaml")
    images = {"captioner": "glm45v", "detector": "gpt-oss", "describer": "qwen3", "ensembler": "qwen3"}
    for role in ROLES:
        rs = settings.role(role)
        model, port = ROLE_DEFAULTS[role]
        assert rs.model == model
        assert rs.urls == [f"http://127.0.0.1:{port}/v1"], "the settings default port, on this host"
        assert rs.server.backend == "docker"
        assert rs.server.image == f"coool/{images[role]}:{VERSION}"
        assert (REPO / "images" / images[role] / "Dockerfile").is_file()
    # One image, two roles: the entry script reads the role from the environment.
    assert settings.describer.server.env == {"COOOL_QWEN3_ROLE": "describer"}
    assert settings.ensembler.server.env == {"COOOL_QWEN3_ROLE": "ensembler"}


def test_gpu_cluster_spreads_each_role_over_external_replicas(settings_from) -> None:
    settings = settings_from("gpu-cluster.yaml")
    for role in ROLES:
        rs = settings.role(role)
        assert rs.model == ROLE_DEFAULTS[role][0]
        assert rs.server.backend == "external"
        assert len(rs.urls) >= 2 and len(set(rs.urls)) == len(rs.urls)


# ---- prefect.yaml ------------------------------------------------------------------


def prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))


def deployments_by_name() -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in prefect_yaml()["deployments"]}


def test_prefect_yaml_parses_as_prefect_reads_it() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(prefect_yaml())
    assert len(model.deployments) == 2 * len(FLOWS)
    for deployment in model.deployments:
        assert deployment.name and deployment.entrypoint and deployment.work_pool
        assert deployment.build and deployment.pull, f"{deployment.name}: its own build and pull steps"


def test_every_flow_is_deployed_on_both_pools() -> None:
    deployments = deployments_by_name()
    for entrypoint, name in FLOWS.items():
        docker, local = deployments[name], deployments[f"{name}-local"]
        assert docker["entrypoint"] == local["entrypoint"] == entrypoint
        assert docker["work_pool"]["name"] == "coool-docker"
        assert local["work_pool"]["name"] == "coool-process"


@pytest.mark.parametrize("entrypoint", sorted(FLOWS))
def test_deployment_parameters_are_the_flows_own(entrypoint: str) -> None:
    from prefect import Flow

    path, func = entrypoint.split(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), func)
    assert isinstance(flow, Flow)
    signature = inspect.signature(flow.fn)
    for deployment in prefect_yaml()["deployments"]:
        if deployment["entrypoint"] == entrypoint:
            unknown = set(deployment["parameters"]) - set(signature.parameters)
            assert not unknown, f"{deployment['name']}: {flow.name} has no parameter(s) {unknown}"


def test_docker_deployments_mount_host_paths_at_the_same_path() -> None:
    for name in FLOWS.values():
        deployment = deployments_by_name()[name]
        variables = deployment["work_pool"]["job_variables"]
        assert variables["image"] == f"coool/pipeline:{VERSION}"
        assert variables["network_mode"] == "host"
        mounts = {}
        for volume in variables["volumes"]:
            source, target, *mode = volume.split(":")
            assert source == target, f"{volume}: same path inside and out"
            mounts[source] = mode
        for key in DOCKER_ENV:
            template = "{{ $" + key + " }}"
            assert template in mounts, f"{name}: mount {key}"
            assert variables["env"][key] == template
        assert mounts["{{ $COOOL_DATA_ROOT }}"] == ["ro"] and mounts["{{ $COOOL_RESULTS_DIR }}"] == []
        params = deployment["parameters"]
        assert params["data_root"] == "{{ $COOOL_DATA_ROOT }}"
        assert params["results_dir"] == "{{ $COOOL_RESULTS_DIR }}"
        assert deployment["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/coool"}}]
        (step,) = deployment["build"]
        assert step["prefect.deployments.steps.run_shell_script"]["script"] == "sh deployments/check-docker-env.sh"


def test_local_deployments_run_from_the_checkout_that_deployed_them() -> None:
    for name in FLOWS.values():
        deployment = deployments_by_name()[f"{name}-local"]
        (build,) = deployment["build"]
        step = build["prefect.deployments.steps.run_shell_script"]
        assert step["script"] == "sh deployments/check-local-env.sh"
        (pull,) = deployment["pull"]
        directory = pull["prefect.deployments.steps.set_working_directory"]["directory"]
        assert directory == "{{ " + step["id"] + ".stdout }}"


def check_docker_env(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in DOCKER_ENV}
    return subprocess.run(
        ["sh", "deployments/check-docker-env.sh"], cwd=REPO, env={**clean, **env}, capture_output=True, text=True, timeout=30
    )


def test_local_deployments_refuse_a_missing_settings_file(tmp_path: Path) -> None:
    def check(**env: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if k != "COOOL_LOCAL_SETTINGS_FILE"}
        return subprocess.run(["sh", "deployments/check-local-env.sh"], cwd=REPO, env={**clean, **env},
                              capture_output=True, text=True, timeout=30)  # fmt: skip

    good = check(COOOL_LOCAL_SETTINGS_FILE=str(SETTINGS_DIR / "local-sim.yaml"))
    assert good.returncode == 0 and good.stdout.strip() == str(REPO), good.stderr
    for env, problem in (({}, "is not set"), ({"COOOL_LOCAL_SETTINGS_FILE": "deployments/settings/local-sim.yaml"}, "absolute"),
                         ({"COOOL_LOCAL_SETTINGS_FILE": str(tmp_path / "none.yaml")}, "no such file")):  # fmt: skip
        result = check(**env)
        assert result.returncode == 1 and problem in result.stderr and "make deploy" in result.stderr
        assert result.stdout == ""


def test_docker_deployments_refuse_unset_or_relative_paths() -> None:
    good = {"COOOL_DATA_ROOT": "/data/2coool", "COOOL_RESULTS_DIR": "/data/results", "COOOL_SETTINGS_FILE": "/etc/coool.yaml"}
    assert check_docker_env(**good).returncode == 0
    for key in DOCKER_ENV:
        missing = {k: v for k, v in good.items() if k != key}
        result = check_docker_env(**missing)
        assert result.returncode == 1 and f"{key} is not set" in result.stderr
        for bad in ("data/2coool", "/"):
            result = check_docker_env(**{**good, key: bad})
            assert result.returncode == 1 and key in result.stderr


# ---- a real Prefect server, a process worker and a deployment run ---------------------


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        # Own process group: stopping it also stops what it spawned (uvicorn, flow runs).
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process this test started: its own process group if it leads one, else just it."""
    if process.poll() is not None:
        return
    try:
        leads_group = os.getpgid(process.pid) == process.pid
    except ProcessLookupError:
        return
    for sig, grace in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            if leads_group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path.name}: no log)"
    return f"--- {path.name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def make(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    # STAMP= : use the running venv as it is (a test never runs `make setup`).
    return subprocess.run(
        ["make", "--no-print-directory", *args, "STAMP=", f"VENV={BIN.parent}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def make_start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return start(["make", "--no-print-directory", *args, "STAMP=", f"VENV={BIN.parent}"], env, log)


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, f"{process.args} exited\n" + tail(log)
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"no {url} after {timeout_s:.0f} s\n" + tail(log)
        time.sleep(0.5)


def test_readme_names_the_sequence_this_test_runs() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for line in ("make ui", "make sim", ".venv/bin/coool synth demo/data", "make deploy DEPLOY='*-local'", "make worker",
                 "make run-deployment DATA=demo/data RECIPE=quick", "results/local-sim/"):  # fmt: skip
        assert line in readme, line


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_the_readme_deployment_sequence_runs_on_a_real_prefect_server(tmp_path: Path) -> None:
    """The README's commands, through make, on ports that are not the defaults:
    `make ui`, `make sim`, `make deploy DEPLOY='*-local'`, `make worker`,
    `make run-deployment`; then `make deploy` of all 14 (pools already there)."""
    prefect_port, sim_port = free_port(), free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    # A user's shell: nothing PREFECT_* or COOOL_* exported; ports as make variables.
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "COOOL_"))}
    env = {**base_env, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_PORT": str(prefect_port),
           "SIM_PORT": str(sim_port), "PREFECT_WORKER_QUERY_SECONDS": "1"}  # fmt: skip
    data = tmp_path / "data"
    synth = subprocess.run([str(BIN / "coool"), "synth", str(data), "--n", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert synth.returncode == 0, synth.stdout + synth.stderr
    results = tmp_path / "results"
    docker_results = tmp_path / "docker-results"
    logs = {name: tmp_path / f"{name}.log" for name in ("ui", "sim", "worker")}
    before = PREFECT_YAML.read_bytes()
    sim_settings = REPO / "build" / "settings" / f"local-sim-{sim_port}.yaml"
    started: list[subprocess.Popen[bytes]] = []
    try:
        ui = make_start(["ui"], env, logs["ui"])
        started.append(ui)
        wait_for(f"{api}/health", ui, logs["ui"])
        assert httpx.get(f"http://127.0.0.1:{prefect_port}/ui-settings", timeout=10).json()["api_url"] == api

        sim = make_start(["sim"], env, logs["sim"])
        started.append(sim)
        wait_for(f"http://127.0.0.1:{sim_port}/health", sim, logs["sim"])

        deployed = make(["deploy", "DEPLOY=*-local"], env, 240)
        assert deployed.returncode == 0, deployed.stdout[-4000:] + deployed.stderr[-4000:]
        assert deployed.stdout.count("successfully created") == len(FLOWS), deployed.stdout[-4000:]
        assert PREFECT_YAML.read_bytes() == before, "prefect deploy must not rewrite prefect.yaml"
        local = httpx.get(f"{api}/deployments/name/coool-pipeline/coool-pipeline-local", timeout=10).json()
        assert local["work_pool_name"] == "coool-process"
        assert local["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
        # The worker's runs get the settings from the deployment, not from the worker's environment.
        assert local["parameters"]["settings_file"] == str(sim_settings)
        assert f"127.0.0.1:{sim_port}/v1" in sim_settings.read_text()

        worker = make_start(["worker"], env, logs["worker"])
        started.append(worker)

        run = make(["run-deployment", f"DATA={data}", "RECIPE=quick", f"RESULTS={results}"], env, 300)
        output = run.stdout + run.stderr
        assert worker.poll() is None, "the worker exited\n" + tail(logs["worker"])
        assert run.returncode == 0, output[-4000:] + "\n" + tail(logs["worker"])
        (flow_run_id,) = set(re.findall(r"UUID: ([0-9a-f-]{36})", output))
        flow_run = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()
        assert flow_run["state_type"] == "COMPLETED", flow_run["state"]
        assert flow_run["deployment_id"] == local["id"]

        submission = results / "submission.csv"
        assert submission.is_file(), output[-2000:]
        frame = read_submission(submission)
        errors = [p for p in validate(frame, expected_videos=[0, 1], strict=True) if p.level == "error"]
        assert not errors, errors
        assert list(frame["video"]) == ["0", "1"]

        # Production: every deployment; the docker ones take their mounts from
        # these variables. The pools exist already: make deploy still succeeds.
        deploy_env = {**env, "COOOL_DATA_ROOT": str(data), "COOOL_RESULTS_DIR": str(docker_results),
                      "COOOL_SETTINGS_FILE": str(SETTINGS_DIR / "gpu-cluster.yaml")}  # fmt: skip
        deployed = make(["deploy"], deploy_env, 300)
        assert deployed.returncode == 0, deployed.stdout[-4000:] + deployed.stderr[-4000:]
        assert deployed.stdout.count("successfully created") == 2 * len(FLOWS), deployed.stdout[-4000:]
        stored = httpx.get(f"{api}/deployments/name/coool-pipeline/coool-pipeline", timeout=10).json()
        assert stored["work_pool_name"] == "coool-docker"
        assert f"{data}:{data}:ro" in stored["job_variables"]["volumes"]
        assert stored["parameters"]["data_root"] == str(data)
        assert stored["parameters"]["settings_file"] == str(SETTINGS_DIR / "gpu-cluster.yaml")
    finally:
        for process in reversed(started):
            stop(process)
        sim_settings.unlink(missing_ok=True)
