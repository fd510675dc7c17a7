"""`make package`: the Lambda deployment zip, reproducibly.

    python3 .ci/package_lambda.py --out build/mirrord-lambda.zip

What goes in: the mirrord runtime wheel (mirrord/ only: no tests, no emulator, no dev
tooling) and exactly requirements.lock, as Linux wheels for the Lambda's Python and
architecture (pip --platform/--python-version/--implementation cp --only-binary=:all:),
whatever Python and OS this runs on. What stays out: __pycache__ and *.pyc (the Lambda
compiles on import), bin/ (console scripts whose shebang names this machine's Python), and
the install records pip writes (RECORD, INSTALLER, REQUESTED, direct_url.json: the last
names the wheel's path on this machine).

Reproducible: the wheel is built from a copy of the sources with the pinned build backend
(the same pins as docker/Dockerfile), and the zip's entries are in byte order of their
paths, each dated 1980-01-01 00:00 with mode 0644 (0755 where the wheel marked it
executable), so an unchanged tree gives the same sha256 and Terraform sees no change.

Stdlib only: it needs the host's python3 (3.11 or newer), pip, and the package index.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The pins docker/Dockerfile builds the wheel with: a newer setuptools writes different
# METADATA, which would change the zip with no change to mirrord.
BACKEND = ("setuptools==84.2.1", "wheel==0.48.0")
SOURCES = ("pyproject.toml", "README.md", "mirrord")
DROPPED_RECORDS = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
EPOCH = (1980, 1, 1, 0, 0, 0)
# What must never ship: the dev package, the emulator, tests of mirrord.
FORBIDDEN = re.compile(r"^(mirrord_dev|tests?)/|emulator|^mirrord/.*/tests?/")


def run(*cmd: str | Path) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)  # noqa: S603 - fixed argv, no shell


def build_wheel(work: Path) -> tuple[Path, Path]:
    """mirrord's wheel, built from a copy of the sources (setuptools' build/ in the tree
    keeps modules deleted since the last build, and would put them in the wheel), and the
    pip of the build venv, which installs the rest."""
    src = work / "src"
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, src / name)
    backend = work / "backend"
    run(sys.executable, "-m", "venv", backend)
    pip = backend / "bin" / "pip"
    run(pip, "install", "--quiet", "--disable-pip-version-check", *BACKEND)
    wheels = work / "wheels"
    run(pip, "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
        "--no-build-isolation", "--wheel-dir", wheels, src)  # fmt: skip
    (wheel,) = wheels.glob("mirrord-*.whl")
    return wheel, pip


def install(pip: Path, wheel: Path, site: Path, python_version: str, platform: str) -> None:
    """The lock and the wheel into site/, as pip would install them on the Lambda."""
    run(pip, "install", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--no-compile", "--only-binary=:all:", "--target", site,
        "--platform", platform, "--implementation", "cp", "--python-version", python_version,
        "-r", ROOT / "requirements.lock", wheel)  # fmt: skip


def prune(site: Path) -> None:
    shutil.rmtree(site / "bin", ignore_errors=True)
    for path in sorted(site.rglob("*"), reverse=True):
        if path.is_dir() and path.name == "__pycache__":
            shutil.rmtree(path)
        elif path.suffix in (".pyc", ".pyo") or (
            path.parent.name.endswith(".dist-info") and path.name in DROPPED_RECORDS
        ):
            path.unlink()


def check(files: list[str], python_version: str) -> None:
    """Refuse a tree that holds dev code, or an extension built for another Python."""
    leaked = [f for f in files if FORBIDDEN.search(f)]
    if leaked:
        sys.exit(f"package: dev or test code in the zip: {leaked[:5]}")
    if "mirrord/lambdas/enqueue.py" not in files or "mirrord/lambdas/sync.py" not in files:
        sys.exit("package: the handlers mirrord/lambdas/{enqueue,sync}.py are missing")
    tag = "cpython-" + python_version.replace(".", "")
    foreign = [f for f in files if f.endswith(".so") and tag not in f and ".abi3." not in f]
    if foreign:
        sys.exit(f"package: extensions not built for CPython {python_version}: {foreign[:5]}")


def write_zip(site: Path, out: Path) -> list[str]:
    files = sorted(
        (p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()),
        key=lambda name: name.encode(),
    )
    partial = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in files:
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.create_system = 3  # Unix, so external_attr carries the mode
            executable = os.stat(site / name).st_mode & 0o111
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, (site / name).read_bytes(), compresslevel=9)
    partial.replace(out)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "mirrord-lambda.zip")
    parser.add_argument("--python-version", default="3.13", help="the Lambda runtime's")
    parser.add_argument("--platform", default="manylinux2014_x86_64", help="pip --platform")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mirrord-package-") as tmp:
        work = Path(tmp)
        wheel, pip = build_wheel(work)
        site = work / "site"
        install(pip, wheel, site, args.python_version, args.platform)
        prune(site)
        files = [p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()]
        check(files, args.python_version)
        write_zip(site, out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    size = out.stat().st_size
    print(f"{out}: {len(files)} files, {size / 1e6:.1f} MB, sha256 {digest}")


if __name__ == "__main__":
    main()
