"""Subset mirrors end to end: `mirrord plan|sync --brewfile` (and MIRRORD_BREWFILE)
against a moto server and the emulator serving the sample catalog, whose real formulae
carry their real dependencies (wget → openssl@3 → ca-certificates, jq → oniguruma, and
wget → libidn2, which the sample leaves out)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import DATE, MakeWorld, run_cli

from mirrord.core.catalog import parse_catalog, select_bottles
from mirrord.core.releases import auto_targets
from mirrord.lambdas.enqueue import job_from_event
from mirrord.services.checkpoint import load_hashfile

BREWFILE = """\
# what the team installs
tap "homebrew/core"
tap "hashicorp/tap"
brew "wget", restart_service: :changed
brew 'jq'
brew "hashicorp/tap/terraform"
cask "firefox"
mas "Xcode", id: 497799835
"""
CLOSURE = {"wget", "jq", "openssl@3", "ca-certificates", "oniguruma"}


@pytest.fixture
async def world(make_world: MakeWorld) -> Any:
    return await make_world()


@pytest.fixture
def brewfile(tmp_path: Path) -> Path:
    path = tmp_path / "Brewfile"
    path.write_text(BREWFILE)
    return path


def env(world: Any, **extra: str) -> dict[str, str]:
    return {
        "MIRRORD_BUCKET": world.app.store.bucket,
        "MIRRORD_API_URL": world.emu.api_url,
        "MIRRORD_READ_TIMEOUT": "2",
        "MIRRORD_BREW_MIRROR": "false",
        **extra,
    }


def expected(world: Any) -> dict[str, Any]:
    """hash key → bottle of the closure's formulae for every auto target, chosen by
    the catalog's own rules from the served catalog (not by core/closure.py)."""
    raw = orjson.dumps(world.emu.catalog.formulae).replace(
        b"{registry}", world.emu.registry_url.encode()
    )
    formulae = parse_catalog(raw).formulae
    subset = [f for f in formulae if f.name in CLOSURE]
    assert {f.name for f in subset} == CLOSURE  # the sample still has them all
    chosen = select_bottles(subset, auto_targets(formulae)).bottles
    return {b.hash_key: b for b in chosen}


async def test_sync_brewfile_stores_exactly_the_closure(world: Any, brewfile: Path) -> None:
    """Every bottle of the roots and their dependencies, per target, and nothing else;
    the lines that are not homebrew/core formulae are said, the sync goes on."""
    result = await run_cli(
        "sync", "--json", "--date", DATE, "--brewfile", str(brewfile),
        env=env(world, MIRRORD_BREW_MIRROR="true"),
    )  # fmt: skip
    assert result.code == 0, result.stderr[-3000:]
    # brew 6's copies of exactly the closure; the API files (every formula, signed)
    # published unchanged, since every bottle of the closure is in the mirror.
    assert result.json()["published"]["api"] == "published"
    assert result.json()["subset"]["roots"] == ["wget", "jq"]
    assert result.json()["subset"]["formulae"] == len(CLOSURE)
    keys = {o.key async for o in world.app.store.list_objects("")}
    assert "api/formula.jws.json" in keys
    images = {k.split("/manifests/")[0].removeprefix("v2/homebrew/core/")
              for k in keys if "/manifests/" in k} - {"portable-ruby"}  # fmt: skip
    assert images == {"wget", "jq", "openssl/3", "ca-certificates", "oniguruma"}
    want = expected(world)
    assert result.json()["downloaded"] == len({b.sha256 for b in want.values()})
    hf, _ = await load_hashfile(world.app.store, "bottles_hash.json")
    assert set(hf.bottles) == set(want)
    stored = {o.key async for o in world.app.store.list_objects(f"{DATE}/")}
    assert stored == {e.s3_key for e in hf.bottles.values()}
    assert {b.name for b in want.values()} == CLOSURE  # jq's oniguruma came along
    skipped = [e["line"] for e in result.logs() if e.get("event") == "brewfile_skipped"]
    assert [line.split(":", 1)[0] for line in skipped] == ["line 3", "line 6", "line 7", "line 8"]


async def test_plan_brewfile_shows_the_closure_and_its_size(world: Any, brewfile: Path) -> None:
    """`plan --brewfile` (here through MIRRORD_BREWFILE): roots, the dependencies they
    add, the missing one, the bottles and their size from the image indexes, which is
    what the sync then stores."""
    planned = await run_cli(
        "plan", "--json", "--date", DATE, env=env(world, MIRRORD_BREWFILE=str(brewfile))
    )
    assert planned.code == 0, planned.stderr[-3000:]
    body = planned.json()
    closure = body["closure"]
    assert closure["roots"] == ["wget", "jq"]
    assert closure["added"] == ["ca-certificates", "oniguruma", "openssl@3"]
    assert closure["missing"] == [{"name": "libidn2", "needed_by": "wget"}]
    assert closure["cycles"] == []
    assert closure["bottles"] == body["transfers"] == len(expected(world))
    assert closure["estimate_unknown"] == 0
    assert closure["estimate_partial"] is None
    assert not [o async for o in world.app.store.list_objects(f"{DATE}/")]  # wrote nothing

    text = await run_cli("plan", "--date", DATE, "--brewfile", str(brewfile), env=env(world))
    assert text.code == 0, text.stderr[-3000:]
    shown = text.stdout.decode()
    assert "closure: 2 asked (wget, jq), 3 dependencies added" in shown
    assert "MISSING libidn2 (needed by wget)" in shown

    synced = await run_cli("sync", "--json", "--date", DATE, "--brewfile", str(brewfile),
                           env=env(world))  # fmt: skip
    assert synced.code == 0, synced.stderr[-3000:]
    # Recorded without the brew-6 publication too (MIRRORD_BREW_MIRROR false here).
    assert synced.json()["subset"]["roots"] == ["wget", "jq"]
    hf, _ = await load_hashfile(world.app.store, "bottles_hash.json")
    sizes = {e.s3_key: e.file_size for e in hf.bottles.values()}
    assert closure["estimated_bytes"] == sum(s or 0 for s in sizes.values()) > 0


async def test_formula_flag_takes_the_closure_too(world: Any) -> None:
    """`--formula jq` was jq alone, and `brew install jq` from the mirror then failed."""
    result = await run_cli("plan", "--json", "--date", DATE, "--formula", "jq", env=env(world))
    assert result.code == 0, result.stderr[-3000:]
    names = {b["key"].split("/")[1].split("-")[0] for b in result.json()["bottles"]}
    assert names == {"jq", "oniguruma"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (None, "cannot be read"),
        ('cask "firefox"\ntap "hashicorp/tap"\n', "names no homebrew/core formula"),
        ('brew "no-such-formula"\n', "not in the catalog: no-such-formula"),
    ],
)
async def test_bad_brewfile_is_a_usage_error(
    world: Any, tmp_path: Path, text: str | None, needle: str
) -> None:
    """Unreadable, no formula in it, or none the catalog has: exit 2, one line, and
    never a sync of the whole catalog in its place."""
    path = tmp_path / "Brewfile"
    if text is not None:
        path.write_text(text)
    result = await run_cli("sync", "--date", DATE, "--brewfile", str(path), env=env(world))
    assert result.code == 2, result.stderr[-3000:]
    said = [line for line in result.stderr.decode().splitlines() if not line.startswith("{")]
    assert len(said) == 1
    assert needle in said[0]
    assert not [o async for o in world.app.store.list_objects(f"{DATE}/")]


async def test_enqueue_dry_run_sizes_the_closure(world: Any, brewfile: Path) -> None:
    """`enqueue --brewfile --dry-run`: the job it would send is the closure's, sized."""
    result = await run_cli(
        "enqueue", "--dry-run", "--json", "--date", DATE, "--brewfile", str(brewfile),
        env=env(world, MIRRORD_SIZE_THRESHOLD_GB="100", MIRRORD_SYNC_FUNCTION="mirrord-sync"),
    )  # fmt: skip
    assert result.code == 0, result.stderr[-3000:]
    body = result.json()
    assert body["dry_run"] is True
    assert body["bottles"] == len(expected(world))
    assert body["estimate"]["from_index"] == body["bottles"]  # every image index read


async def test_formulae_setting_is_the_subset_of_a_job_naming_none(world: Any) -> None:
    """MIRRORD_FORMULAE (config.yaml's `brewfile`/`formulae`, rendered for a deployed
    mirror) is the closure's roots when the command line names none; --formula wins."""
    subset = env(world, MIRRORD_FORMULAE="wget, jq")
    planned = await run_cli("plan", "--json", "--date", DATE, env=subset)
    assert planned.code == 0, planned.stderr[-3000:]
    assert planned.json()["closure"]["roots"] == ["wget", "jq"]
    assert planned.json()["transfers"] == len(expected(world))
    named = await run_cli("plan", "--json", "--date", DATE, "--formula", "xz", env=subset)
    assert named.code == 0, named.stderr[-3000:]
    assert named.json()["closure"]["roots"] == ["xz"]
    bad = await run_cli("plan", "--date", DATE, env=env(world, MIRRORD_FORMULAE="jq,../x"))
    assert bad.code == 2
    assert "MIRRORD_FORMULAE: '../x' is not a formula name" in bad.stderr.decode()


def test_scheduled_and_manual_events_take_the_deployed_subset() -> None:
    """The enqueue Lambda's weekly job carries MIRRORD_FORMULAE's roots; a manual event
    naming formulae, or `"formulae": null` (everything), overrides them."""
    now = datetime(2026, 11, 23, 3, tzinfo=UTC)
    roots = ("wget", "jq")
    weekly = job_from_event({"source": "aws.events", "time": f"{DATE}T03:00:00Z"}, now,
                            formulae=roots)  # fmt: skip
    assert (weekly.reason, weekly.formulae) == ("schedule", roots)
    assert job_from_event({"source": "manual"}, now, formulae=roots).formulae == roots
    one = job_from_event({"source": "manual", "formulae": ["xz"]}, now, formulae=roots)
    assert one.formulae == ("xz",)
    assert (
        job_from_event({"source": "manual", "formulae": None}, now, formulae=roots).formulae is None
    )
    assert job_from_event({"source": "aws.events"}, now).formulae is None
