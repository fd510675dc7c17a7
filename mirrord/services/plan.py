"""What a sync of a job would fetch, found without fetching it: the catalog, the hash
file, the targets and the plan. ``mirrord plan`` shows it; the enqueuer sizes it and
sends the job on."""

from __future__ import annotations

from dataclasses import dataclass

from mirrord.adapters.web import fetch_catalog
from mirrord.core.catalog import Catalog
from mirrord.core.closure import Closure, job_closure
from mirrord.core.hashfile import HashFile
from mirrord.core.jobs import Job
from mirrord.core.plan import Plan
from mirrord.services.checkpoint import load_hashfile
from mirrord.services.ports import Adapters
from mirrord.services.sync import prepare


@dataclass(frozen=True, slots=True)
class Planned:
    catalog: Catalog
    hashfile: HashFile
    targets: tuple[str, ...]
    plan: Plan
    closure: Closure | None = None  # the job's formulae and their dependencies, if named


async def plan_job(app: Adapters, job: Job, *, external: HashFile | None) -> Planned:
    """The plan a sync of ``job`` would follow now; ``external`` is another mirror's
    hash file (MIRRORD_EXTERNAL_HASH_URL), whose bottles are skipped."""
    s = app.settings
    catalog = await fetch_catalog(app.http, s.api_url, app.backoff)
    hf, _ = await load_hashfile(app.store, s.hash_key)
    targets, plan = prepare(catalog, hf, job, s.platforms, external, s.releases)
    return Planned(
        catalog, hf, targets, plan, job_closure(catalog, job.formulae, targets, s.releases)
    )
