"""`mirrord config validate|render`: config.yaml in, Terraform's files out. No bucket, no
clients, no event loop: the deploy machine runs it before anything exists."""

from __future__ import annotations

import argparse
import sys

import orjson

from mirrord.core.deployconfig import FOLDER_LINKS, DeployConfig
from mirrord.core.deployconfig import parse as parse_deploy_config
from mirrord.core.errors import ConfigError
from mirrord.core.report import EXIT_OK, EXIT_USAGE


def _render(config: DeployConfig, args: argparse.Namespace) -> None:
    """infra/environments/<env>/: the shared root's links (made once, left alone when
    right), terraform.tfvars.json and backend.hcl. With --out: the tfvars JSON only."""
    body = orjson.dumps(config.tfvars(args.env), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(body + b"\n")
        print(f"wrote {args.out}")
        return
    folder = args.infra / "environments" / args.env
    if not (args.infra / "environments" / "dev" / "main.tf").is_file():
        raise OSError(f"{args.infra}/environments/dev/main.tf: not found (run from the repository)")
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in FOLDER_LINKS.items():
        link = folder / name
        if link.exists() and link.resolve() == (folder / target).resolve():
            continue
        if link.exists() or link.is_symlink():
            raise OSError(f"{link}: exists and is not the shared {target}; remove it")
        link.symlink_to(target)
    (folder / "terraform.tfvars.json").write_bytes(body + b"\n")
    (folder / "backend.hcl").write_text(config.backend(args.env))
    print(f"wrote {folder}/terraform.tfvars.json and backend.hcl")


def cmd_config(args: argparse.Namespace) -> int:
    """No bucket, no clients: a file in, files out."""
    try:
        folder = args.file.parent  # a Brewfile's path is relative to config.yaml
        config = parse_deploy_config(
            args.file.read_bytes(), read=lambda path: (folder / path).read_text("utf-8")
        )
        if args.action == "validate":
            print(f"{args.file}: {', '.join(config.environments)} valid")
        else:
            _render(config, args)
        return EXIT_OK
    except OSError as exc:
        print(f"mirrord: config: {exc}", file=sys.stderr)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"mirrord: {args.file}: {problem}", file=sys.stderr)
    return EXIT_USAGE
