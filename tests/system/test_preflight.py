"""`make test` on a machine without terraform or Node.js stops at once with one line per
missing tool saying what to install (issue 13 #12): never a traceback, never a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def preflight(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "tests" / "preflight.py")],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path},
        timeout=120,
    )


def test_missing_tools_are_one_line_each_naming_what_to_install(tmp_path: Path) -> None:
    """A PATH with none of them: exit 2, one line each for terraform, node and npm, each
    saying what to install; nothing else."""
    result = preflight(str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    assert "terraform 1.9 or newer" in lines[0]
    assert "developer.hashicorp.com/terraform/install" in lines[0]
    assert "Node.js 18 or newer" in lines[1]
    assert "npm" in lines[2]
    assert "Traceback" not in result.stderr


def test_an_old_tool_is_named_with_the_version_found(tmp_path: Path) -> None:
    """terraform 1.5 is there but too old: said so, with the version found."""
    fake = tmp_path / "terraform"
    fake.write_text("#!/bin/sh\necho 'Terraform v1.5.7'\n")
    fake.chmod(0o755)
    path = os.pathsep.join([str(tmp_path), os.environ["PATH"]])
    result = preflight(path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "make test needs terraform 1.9 or newer (the infra tests apply infra/ to moto): "
        "https://developer.hashicorp.com/terraform/install (found 1.5)"
    ]


def test_this_machine_has_what_make_test_needs() -> None:
    """Where make test runs (here, CI), the preflight passes."""
    result = preflight(os.environ["PATH"])
    assert result.returncode == 0, result.stderr
