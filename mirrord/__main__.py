"""The ``mirrord`` command (pyproject's entry point) and ``python -m mirrord``.

``health`` is answered before the rest of the program is imported: ECS runs it every
60 s, and cli.py's imports (aiobotocore, aiohttp, structlog…) cost about 1 s of CPU.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

GLOBAL_FLAGS = ("-q", "--quiet", "-v", "--verbose")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    first = next((i for i, a in enumerate(args) if a not in GLOBAL_FLAGS), len(args))
    if args[first : first + 1] == ["health"]:
        from mirrord.health import main as health

        return health(args[:first] + args[first + 1 :], os.environ if env is None else env)
    from mirrord.cli import main as cli

    return cli(args, env)


if __name__ == "__main__":
    sys.exit(main())
