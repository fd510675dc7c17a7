"""The benchmark's upstream: the project's emulator serving one corpus from memory.

Run as ``python -m bench.origin --corpus mixed [--scale 0.1]`` by the harness. Every bottle
is generated and hashed once at start and kept in RAM (the emulator's cache is sized to the
corpus), so serving never touches the disk and never regenerates a blob mid-run. Prints
one JSON line once listening: urls and the corpus's size.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import signal
import sys
from dataclasses import dataclass

import orjson
from mirrord_dev.emulator.content import REGISTRY, EmulatorCatalog, blob_url, derive_seed
from mirrord_dev.emulator.server import Emulator

TAG = "arm64_tahoe"  # one bottle per formula: bottles = formulae, nothing shared or skipped
KB, MB = 1000, 1000 * 1000


@dataclass(frozen=True, slots=True)
class Corpus:
    name: str
    title: str
    sizes: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.sizes)


def _log_uniform(rng: random.Random, n: int, lo: int, hi: int) -> list[int]:
    a, b = math.log(lo), math.log(hi)
    return [int(math.exp(rng.uniform(a, b))) for _ in range(n)]


def corpus(name: str, scale: float = 1.0, seed: int = 0) -> Corpus:
    """The three corpora of the issue; ``scale`` shrinks counts (and the large sizes) for
    sweeps and the smoke run while keeping each corpus's shape."""
    rng = random.Random(f"{name}:{seed}")  # noqa: S311 - test data, not crypto
    if name == "small":
        n = max(8, round(5000 * scale))
        return Corpus(
            name, f"{n:,} bottles of 50 KB–2 MB", tuple(_log_uniform(rng, n, 50 * KB, 2 * MB))
        )
    if name == "mixed":
        n = max(8, round(500 * scale))
        few = max(1, round(4 * scale))
        big_hi = max(2 * MB, round(500 * MB * min(1.0, scale * 4)))
        big = [rng.randint(big_hi // 5, big_hi) for _ in range(few)]
        sizes = _log_uniform(rng, n, 100 * KB, 5 * MB) + big
        rng.shuffle(sizes)
        return Corpus(
            name,
            f"{n:,} bottles of 100 KB–5 MB and {few} of {big_hi // 5 // MB}–{big_hi // MB} MB",
            tuple(sizes),
        )
    if name == "large":
        size = max(MB, round(1000 * MB * scale))
        return Corpus(name, f"one bottle of {size / 1e9:.2f} GB", (size,))
    raise ValueError(f"unknown corpus {name!r}; expected small, mixed or large")


def build_catalog(c: Corpus, seed: int = 0) -> EmulatorCatalog:
    catalog = EmulatorCatalog([], {}, cache_limit=c.total + (1 << 30))
    for i, size in enumerate(c.sizes):
        name = f"{c.name}{i:05d}"
        blob = catalog.add_blob(name, TAG, size, derive_seed(seed, name, TAG))
        catalog.formulae.append(
            {
                "name": name,
                "full_name": name,
                "versions": {"stable": "1.0", "bottle": True},
                "revision": 0,
                "bottle": {
                    "stable": {
                        "rebuild": 0,
                        "root_url": f"{REGISTRY}/v2/homebrew/core",
                        "files": {
                            TAG: {
                                "cellar": ":any",
                                "url": blob_url(name, blob.sha256),
                                "sha256": blob.sha256,
                            }
                        },
                    }
                },
            }
        )
    return catalog


async def _serve(catalog: EmulatorCatalog, c: Corpus) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Emulator(catalog) as emulator:
        ready = {
            "api_url": emulator.api_url,
            "registry_url": emulator.registry_url,
            "corpus": c.name,
            "title": c.title,
            "bottles": len(c.sizes),
            "bytes": c.total,
        }
        sys.stdout.buffer.write(orjson.dumps(ready) + b"\n")
        sys.stdout.flush()
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.origin", description=__doc__)
    p.add_argument("--corpus", required=True, choices=("small", "mixed", "large"))
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    c = corpus(args.corpus, args.scale, args.seed)
    catalog = build_catalog(c, args.seed)
    try:
        import uvloop

        uvloop.run(_serve(catalog, c))
    except ImportError:
        asyncio.run(_serve(catalog, c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
