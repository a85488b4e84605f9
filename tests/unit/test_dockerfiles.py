"""The Dockerfiles, without docker (it cannot run here): each is parsed, its dependency
command is executed against pyproject.toml, and its CMD is run from a copy of exactly the
directories it COPYs, with its ENV, the way the container would start it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT, free_port, stop_process, wait_for

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


@dataclass(frozen=True)
class Instruction:
    op: str
    args: str


def parse(path: Path) -> list[Instruction]:
    """Dockerfile instructions, with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        op, _, args = full.partition(" ")
        instructions.append(Instruction(op.upper(), args.strip()))
    return instructions


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for ins in instructions:
        if ins.op == "ENV":
            for item in shlex.split(ins.args):
                key, _, value = item.partition("=")
                values[key] = value
    return values


def cmd_of(instructions: list[Instruction]) -> list[str]:
    (cmd,) = [ins for ins in instructions if ins.op == "CMD"]
    argv: list[str] = json.loads(cmd.args)  # exec form: no shell unless it asks for one
    return argv


DOCKERFILES = {
    "worker": REPO_ROOT / "Dockerfile.worker",
    "dashboard": REPO_ROOT / "Dockerfile.dashboard",
}


@pytest.fixture(params=sorted(DOCKERFILES))
def dockerfile(request: pytest.FixtureRequest) -> list[Instruction]:
    return parse(DOCKERFILES[request.param])


def test_slim_python_base_within_requires_python(dockerfile: list[Instruction]) -> None:
    assert dockerfile[0].op == "FROM"
    match = re.fullmatch(r"python:(3\.\d+)-slim(-\w+)?", dockerfile[0].args)
    assert match, dockerfile[0].args
    minor = int(match.group(1).split(".")[1])
    requires = PYPROJECT["project"]["requires-python"]  # ">=3.11,<3.13"
    low, high = (int(v) for v in re.findall(r"3\.(\d+)", requires))
    assert low <= minor < high


def test_runs_as_a_non_root_user_after_every_install(dockerfile: list[Instruction]) -> None:
    users = [i for i, ins in enumerate(dockerfile) if ins.op == "USER"]
    assert users, "no USER instruction: the container would run as root"
    last_user = dockerfile[users[-1]].args
    assert last_user not in ("root", "0")
    last_run = max(i for i, ins in enumerate(dockerfile) if ins.op == "RUN")
    assert users[-1] > last_run


def test_dependency_layer_is_built_before_the_code_is_copied(
    dockerfile: list[Instruction],
) -> None:
    copies = [(i, ins.args.split()) for i, ins in enumerate(dockerfile) if ins.op == "COPY"]
    first_index, first = copies[0]
    assert first[:-1] == ["pyproject.toml"], "the first COPY must bring pyproject.toml alone"
    install = next(i for i, ins in enumerate(dockerfile)
                   if ins.op == "RUN" and "pip install" in ins.args)
    assert first_index < install < copies[1][0]
    # No other install after the code arrives: a code change rebuilds no dependency.
    assert not any("pip install" in ins.args for ins in dockerfile[copies[1][0]:]
                   if ins.op == "RUN")


def test_every_installed_dependency_comes_from_pyproject(
    dockerfile: list[Instruction], tmp_path: Path,
) -> None:
    runs = [ins.args for ins in dockerfile if ins.op == "RUN"]
    assert not any("apt-get install" in run or "apk add" in run for run in runs)
    (install,) = [run for run in runs if "pip install" in run]
    commands = [c.strip() for c in install.split("&&")]
    pip = [c for c in commands if "pip install" in c]
    assert pip == ["pip install -r /tmp/requirements.txt"], pip
    # Execute the command that writes the requirements, against the real pyproject.toml.
    (generate,) = [c for c in commands if "> /tmp/requirements.txt" in c]
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    out = tmp_path / "requirements.txt"
    script = generate.replace("> /tmp/requirements.txt", "").strip()
    argv = shlex.split(script)
    assert argv[:2] == ["python", "-c"]
    produced = subprocess.run([sys.executable, "-c", argv[2]], cwd=tmp_path, check=True,
                              capture_output=True, text=True).stdout
    out.write_text(produced)
    # core's dependencies plus the image's own extra (slim images).
    extra = image_extra(dockerfile)
    assert produced.split("\n")[:-1] == (PYPROJECT["project"]["dependencies"]
                                         + PYPROJECT["project"]["optional-dependencies"][extra])


def image_extra(instructions: list[Instruction]) -> str:
    """Which service an image is, from the code it COPYs."""
    copied = {ins.args.split()[0] for ins in instructions if ins.op == "COPY"}
    (service,) = copied & {"worker", "dashboard"}
    return service


def requirements_of(instructions: list[Instruction], workdir: Path) -> list[str]:
    """The requirements the image's dependency RUN writes, by running its command."""
    (install,) = [ins.args for ins in instructions
                  if ins.op == "RUN" and "pip install" in ins.args]
    (generate,) = [c.strip() for c in install.split("&&") if "> /tmp/requirements.txt" in c]
    argv = shlex.split(generate.replace("> /tmp/requirements.txt", "").strip())
    shutil.copy(REPO_ROOT / "pyproject.toml", workdir / "pyproject.toml")
    out = subprocess.run([sys.executable, "-c", argv[2]], cwd=workdir, check=True,
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip()]


# What the worker image must not carry (the dashboard's stack and the embedded database).
NOT_IN_WORKER = {"streamlit", "pandas", "pyarrow", "pgserver", "altair"}


def _installed(target: Path) -> set[str]:
    return {p.name.split("-")[0].lower().replace("_", "-")
            for p in target.glob("*.dist-info")}


def _size_mb(target: Path) -> float:
    return sum(f.stat().st_size for f in target.rglob("*") if f.is_file()) / 1e6


@pytest.mark.slow
def test_each_image_installs_only_its_own_dependency_set(tmp_path: Path) -> None:
    """pip install each image's requirements the way its Dockerfile does (into a target
    directory: there is no docker here) and look at what arrived."""
    sizes = {}
    installed = {}
    for name, path in sorted(DOCKERFILES.items()):
        workdir = tmp_path / name
        workdir.mkdir()
        requirements = workdir / "requirements.txt"
        requirements.write_text("\n".join(requirements_of(parse(path), workdir)) + "\n")
        target = workdir / "site-packages"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
                        "--target", str(target), "-r", str(requirements)], check=True,
                       capture_output=True, timeout=900)
        installed[name] = _installed(target)
        sizes[name] = _size_mb(target)
    print(f"\ninstalled dependency size: worker {sizes['worker']:.0f} MB, "
          f"dashboard {sizes['dashboard']:.0f} MB")
    assert not installed["worker"] & NOT_IN_WORKER, installed["worker"] & NOT_IN_WORKER
    assert {"fastapi", "uvicorn", "psycopg", "openai"} <= installed["worker"]
    assert {"streamlit", "pandas", "authlib"} <= installed["dashboard"]
    # (Streamlit itself depends on uvicorn, so only these stay out of the dashboard's.)
    assert not installed["dashboard"] & {"pgserver", "fastapi"}


def test_cmd_is_the_entry_point_the_tests_start() -> None:
    conftest = (REPO_ROOT / "tests" / "conftest.py").read_text()
    assert cmd_of(parse(DOCKERFILES["worker"])) == ["python", "-m", "worker"]
    assert '[sys.executable, "-m", "worker"]' in conftest
    dashboard_cmd = cmd_of(parse(DOCKERFILES["dashboard"]))
    assert dashboard_cmd[:2] == ["sh", "-c"]
    assert shlex.split(dashboard_cmd[2])[:4] == ["exec", "python", "-m", "dashboard"]
    browser_test = (REPO_ROOT / "tests" / "dashboard" / "test_browser.py").read_text()
    assert '[sys.executable, "-m", "dashboard"' in browser_test


@pytest.fixture
def image_root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "app"


def _stage(instructions: list[Instruction], root: Path) -> None:
    """Copy what the Dockerfile COPYs, and nothing else, into ``root`` (its WORKDIR)."""
    root.mkdir()
    for ins in instructions:
        if ins.op != "COPY":
            continue
        *sources, _ = ins.args.split()
        for source in sources:
            src = REPO_ROOT / source
            if src.is_dir():
                shutil.copytree(src, root / source,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(src, root / source)


def _run_cmd(instructions: list[Instruction], root: Path, env: dict[str, str],
             log: Path) -> subprocess.Popen[bytes]:
    argv = cmd_of(instructions)
    # The image's python is the venv's here; PATH finds it first.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=root, env={**os.environ, **env, "PATH": path},
                                stdout=out, stderr=subprocess.STDOUT)


def _healthy(proc: subprocess.Popen[bytes], url: str, log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"the CMD exited:\n{log.read_text(errors='replace')[-3000:]}")
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_worker_cmd_serves_on_port_from_only_the_copied_code(
    env: dict[str, str], image_root: Path, tmp_path: Path,
) -> None:
    instructions = parse(DOCKERFILES["worker"])
    _stage(instructions, image_root)
    # Python picks the copied code, not the checkout's.
    found = subprocess.run([sys.executable, "-c", "import core, worker; print(core.__file__)"],
                           cwd=image_root, capture_output=True, text=True, check=True).stdout
    assert found.startswith(str(image_root))
    port = free_port()
    # The image's ENV, with what the test must change: loopback only, a test database.
    run_env = {**env_of(instructions), **env, "HOST": "127.0.0.1", "PORT": str(port),
               "LOCAL_STORAGE_DIR": str(tmp_path / "images")}
    proc = _run_cmd(instructions, image_root, run_env, tmp_path / "worker.log")
    try:
        wait_for(lambda: _healthy(proc, f"http://127.0.0.1:{port}/healthz",
                                  tmp_path / "worker.log"), timeout_s=60,
                 message="the worker CMD")
    finally:
        stop_process(proc)


def test_worker_image_runs_the_cli_from_only_the_copied_code(
    image_root: Path, tmp_path: Path,
) -> None:
    """`aiwebimage jobs submit --help` in the worker image: the CLI needs nothing of the
    dashboard, which the image does not copy."""
    instructions = parse(DOCKERFILES["worker"])
    _stage(instructions, image_root)
    assert not (image_root / "dashboard").exists()
    shim = next(ins.args for ins in instructions
                if ins.op == "RUN" and "/usr/local/bin/aiwebimage" in ins.args)
    assert "python -m cli" in shim
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = subprocess.run([sys.executable, "-m", "cli", "jobs", "submit", "--help"],
                            cwd=image_root, capture_output=True, text=True, timeout=60,
                            env={**os.environ, **env_of(instructions), "PATH": path})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: aiwebimage jobs submit"), result.stdout
    assert "--style" in result.stdout


def test_worker_image_refuses_to_start_without_production_secrets(
    image_root: Path, tmp_path: Path,
) -> None:
    instructions = parse(DOCKERFILES["worker"])
    _stage(instructions, image_root)
    assert env_of(instructions)["ENVIRONMENT"] == "production"
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "API_KEY", "TASK_SECRET", "OPENAI_API_KEY")}
    path = f"{Path(sys.executable).parent}{os.pathsep}{clean.get('PATH', '')}"
    result = subprocess.run(cmd_of(instructions), cwd=image_root, capture_output=True,
                            text=True, timeout=60,
                            env={**clean, **env_of(instructions), "PATH": path,
                                 "HOST": "127.0.0.1", "PORT": str(free_port())})
    assert result.returncode != 0
    assert "API_KEY" in result.stdout + result.stderr


def test_dashboard_cmd_serves_on_port_from_only_the_copied_code(
    env: dict[str, str], image_root: Path, tmp_path: Path,
) -> None:
    instructions = parse(DOCKERFILES["dashboard"])
    _stage(instructions, image_root)
    port = free_port()
    run_env = {**env_of(instructions), **env, "PORT": str(port), "HOME": str(tmp_path),
               "STREAMLIT_SERVER_ADDRESS": "127.0.0.1",
               "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none"}
    proc = _run_cmd(instructions, image_root, run_env, tmp_path / "dashboard.log")
    try:
        wait_for(lambda: _healthy(proc, f"http://127.0.0.1:{port}/_stcore/health",
                                  tmp_path / "dashboard.log"), timeout_s=60,
                 message="the dashboard CMD")
    finally:
        stop_process(proc)


def test_cloudbuild_builds_both_images() -> None:
    build = (REPO_ROOT / "cloudbuild.yaml").read_text()
    for name, path in DOCKERFILES.items():
        assert f'"-f", "{path.name}"' in build, name
        assert f"/{name}:${{_TAG}}" in build, name
