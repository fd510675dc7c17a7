"""python -m mirrord_dev.emulator: serve a catalog until SIGTERM/SIGINT.

Prints one JSON line with the urls once both origins listen, so a parent process can read
where to point the client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import orjson

from mirrord_dev.emulator.content import (
    EmulatorCatalog,
    catalog_from_entries,
    sample_catalog,
    synthetic_catalog,
)
from mirrord_dev.emulator.flat import FlatMirror
from mirrord_dev.emulator.server import Emulator, faults_from_json


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mirrord_dev.emulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="registry/api port (0: any free)")
    p.add_argument("--blob-port", type=int, default=0, help="blob storage port (0: any free)")
    p.add_argument("--auth", choices=("anonymous", "challenge"), default="anonymous")
    p.add_argument("--seed", type=int, default=0)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--synthetic", type=int, metavar="N", help="N synthetic formulae")
    source.add_argument(
        "--catalog", type=Path, metavar="FILE", help="JSON list of formula.json entries"
    )
    p.add_argument("--large-every", type=int, default=0, metavar="K")
    p.add_argument("--large-size", type=int, default=150 * 2**20, metavar="BYTES")
    p.add_argument(
        "--default-size",
        type=int,
        default=200_000,
        metavar="BYTES",
        help="bottle size for --catalog",
    )
    p.add_argument("--faults", help='JSON {"<sha256>": [fault, ...]} to set at start')
    p.add_argument(
        "--flat",
        action="store_true",
        help="also serve the bottles as a TUNA/USTC-style flat folder (ready line: flat_url)",
    )
    p.add_argument(
        "--latency",
        type=_latency,
        default=(0.0, 0.0),
        metavar="LOW-HIGH",
        help="seconds each request waits before its answer, uniformly drawn, e.g. 0.05-0.2",
    )
    p.add_argument(
        "--bytes-per-s", type=int, default=0, metavar="N", help="each blob answer's pace (0: off)"
    )
    return p


def _latency(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    try:
        span = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW-HIGH seconds") from None
    if not 0 <= span[0] <= span[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 ≤ LOW ≤ HIGH")
    return span


def _catalog(args: argparse.Namespace) -> EmulatorCatalog:
    if args.synthetic is not None:
        return synthetic_catalog(
            args.synthetic, seed=args.seed, large_every=args.large_every, large_size=args.large_size
        )
    if args.catalog is not None:
        entries = orjson.loads(args.catalog.read_bytes())
        return catalog_from_entries(entries, seed=args.seed, default_size=args.default_size)
    return sample_catalog(seed=args.seed)


async def _serve(args: argparse.Namespace, catalog: EmulatorCatalog) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with (
        Emulator(
            catalog,
            host=args.host,
            port=args.port,
            blob_port=args.blob_port,
            auth=args.auth,
            latency=args.latency,
            bytes_per_s=args.bytes_per_s,
        ) as emulator,
        contextlib.AsyncExitStack() as stack,
    ):
        for sha256, faults in faults_from_json(orjson.loads(args.faults or "{}")).items():
            emulator.set_faults(sha256, faults)
        flat = await stack.enter_async_context(FlatMirror(catalog)) if args.flat else None
        ready = {
            **({"flat_url": flat.url} if flat is not None else {}),
            "api_url": emulator.api_url,
            "registry_url": emulator.registry_url,
            "blob_url": emulator.blob_url,
            "formulae": len(catalog.formulae),
            "blobs": len(catalog.blobs),
            "bytes": catalog.total_size,
        }
        sys.stdout.buffer.write(orjson.dumps(ready) + b"\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        catalog = _catalog(args)
        asyncio.run(_serve(args, catalog))
    except (OSError, ValueError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
