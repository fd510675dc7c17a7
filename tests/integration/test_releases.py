"""macOS releases beyond the built-in table (issue 13, item 4): a catalog tag of a macOS
mirrord does not know is reported by name, and MIRRORD_MACOS_RELEASES lets ``auto`` and
explicit targets use it without a new mirrord release."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiobotocore.session import get_session
from conftest import DATE, Receiver, make_settings
from mirrord_dev.emulator import Emulator, catalog_from_entries
from mirrord_dev.emulator.content import jws
from structlog.testing import capture_logs

from mirrord.app import open_app, run_job
from mirrord.core.brew import api_gaps
from mirrord.core.catalog import parse_catalog, select_bottles
from mirrord.core.errors import JobError, SettingsError
from mirrord.core.jobs import Job, parse_job
from mirrord.core.releases import (
    DEFAULT_RELEASES,
    auto_targets,
    macos_looking,
    parse_tag,
    unknown_tags,
    validate_targets,
)
from mirrord.core.report import Report
from mirrord.core.settings import from_env, parse_releases
from mirrord.daemon import Daemon
from mirrord.lambdas.enqueue import enqueue, job_from_event
from mirrord.lambdas.sync import handler as sync_handler
from mirrord.notify import failure_message, success_message
from mirrord.services.sync import load_hashfile

GHCR = "https://ghcr.io/v2/homebrew/core"
REDWOOD = parse_releases("redwood=28")


def entry(name: str, tags: list[str]) -> dict[str, Any]:
    shas = {tag: hashlib.sha256(f"{name} {tag}".encode()).hexdigest() for tag in tags}
    files = {
        tag: {"cellar": ":any", "url": f"{GHCR}/{name}/blobs/sha256:{sha}", "sha256": sha}
        for tag, sha in shas.items()
    }
    return {
        "name": name,
        "versions": {"stable": "1.0"},
        "revision": 0,
        "bottle": {"stable": {"rebuild": 0, "root_url": GHCR, "files": files}},
    }


# The catalog the week a new macOS ships: its bottles come first, as brew lists them.
NEXT = [
    entry("jq", ["arm64_redwood", "arm64_tahoe", "tahoe", "arm64_sequoia", "sequoia"]),
    entry("tahoe-only", ["arm64_tahoe", "x86_64_linux", "arm64_linux"]),
    entry("certs", ["all"]),
]


def formulae(entries: list[dict[str, Any]]) -> Any:
    return parse_catalog(orjson.dumps(entries)).formulae


def test_which_tags_look_like_macos() -> None:
    """macOS-looking: lowercase ASCII words joined by '_', optionally after 'arm64_';
    never 'all' or a Linux tag, nothing with digits or other characters."""
    for tag in ("redwood", "arm64_redwood", "big_sky", "arm64_golden_gate", "tahoe"):
        assert macos_looking(tag), tag
    for tag in (
        *("all", "arm64_linux", "x86_64_linux", "linux", "arm64_all", "arm64_", ""),
        *("x86_64_redwood", "redwood2", "Redwood", "red-wood", "_redwood", "redwood_"),
        *("arm64__redwood", "r\u00e9dwood", "redwood\n"),
    ):
        assert not macos_looking(tag), tag


def test_unknown_macos_tags_are_listed_by_name_and_the_extension_knows_them() -> None:
    """Every macOS-looking tag the table lacks is named, sorted, once; the table
    extended with MIRRORD_MACOS_RELEASES knows them. Linux, 'all' and known tags are
    never listed."""
    cat = formulae([*NEXT, entry("intel", ["redwood", "sonoma"])])
    assert unknown_tags(cat) == ("arm64_redwood", "redwood")
    assert unknown_tags(cat, REDWOOD) == ()


def test_auto_and_selection_use_the_extended_table() -> None:
    """Without the extension, auto cannot see redwood; with it, redwood is the newest
    release (Apple Silicon only: Intel ends at tahoe), and a formula with no redwood
    bottle falls back to its tahoe one there, as brew does."""
    cat = formulae(NEXT)
    assert auto_targets(cat) == ("arm64_tahoe", "tahoe", "arm64_sequoia", "sequoia")
    assert auto_targets(cat, REDWOOD) == (
        "arm64_redwood", "arm64_tahoe", "tahoe", "arm64_sequoia", "sequoia",
    )  # fmt: skip
    picked = {b.name: b.tag for b in select_bottles(cat, ("arm64_redwood",), REDWOOD).bottles}
    assert picked == {"jq": "arm64_redwood", "tahoe-only": "arm64_tahoe", "certs": "all"}
    # The built-in table cannot read the target: no fallback, only exact tags and 'all'.
    plain = {b.name: b.tag for b in select_bottles(cat, ("arm64_redwood",)).bottles}
    assert plain == {"jq": "arm64_redwood", "certs": "all"}


def test_the_table_is_a_value_not_global_state() -> None:
    """Using an extended table leaves the built-in one as it was: no module state."""
    assert parse_tag("arm64_redwood", REDWOOD).release == 28
    assert parse_tag("arm64_redwood").os == "unknown"
    assert DEFAULT_RELEASES.get("redwood") is None
    assert validate_targets(["arm64_redwood"], REDWOOD) == ("arm64_redwood",)
    with pytest.raises(SettingsError, match="MIRRORD_MACOS_RELEASES"):
        validate_targets(["arm64_redwood"])


def test_macos_releases_setting_extends_targets() -> None:
    """MIRRORD_MACOS_RELEASES=redwood=28 lets MIRRORD_PLATFORMS name arm64_redwood; it
    may repeat a known codename's own number; Intel redwood is still no machine."""
    s = from_env(
        {
            "MIRRORD_BUCKET": "b-1",
            "MIRRORD_PLATFORMS": "arm64_redwood,arm64_tahoe",
            "MIRRORD_MACOS_RELEASES": " redwood = 28 , big_sky=29,tahoe=26,",
        }
    )
    assert s.platforms == ("arm64_redwood", "arm64_tahoe")
    assert (s.releases.get("redwood"), s.releases.get("big_sky")) == (28, 29)
    assert from_env({"MIRRORD_BUCKET": "b-1"}).releases == DEFAULT_RELEASES
    with pytest.raises(SettingsError, match=r"^MIRRORD_PLATFORMS: 'redwood' is not a machine"):
        from_env(
            {
                "MIRRORD_BUCKET": "b-1",
                "MIRRORD_PLATFORMS": "redwood",
                "MIRRORD_MACOS_RELEASES": "redwood=28",
            }
        )
    with pytest.raises(SettingsError, match=r"^MIRRORD_PLATFORMS: .*MIRRORD_MACOS_RELEASES"):
        from_env({"MIRRORD_BUCKET": "b-1", "MIRRORD_PLATFORMS": "arm64_redwood"})


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("redwood", "is not codename=number"),
        ("redwood=", "is not codename=number"),
        ("=28", "is not codename=number"),
        ("redwood=28x", "is not codename=number"),
        ("redwood=\u0662\u0668", "is not codename=number"),  # Arabic-Indic digits
        ("redwood=\uff12\uff18", "is not codename=number"),  # fullwidth digits
        ("r\u00e9dwood=28", "is not codename=number"),
        ("red wood=28", "is not codename=number"),
        ("redwood=1e3", "is not codename=number"),
        ("Redwood=28", "is not a macOS codename"),
        ("redwood2=28", "is not a macOS codename"),
        ("arm64_redwood=28", "is not a macOS codename"),
        ("all=28", "is not a macOS codename"),
        ("linux=28", "is not a macOS codename"),
        ("_redwood=28", "is not a macOS codename"),
        (f"{'a' * 27}=28", "longer than a bottle tag"),
        ("redwood=9", "no macOS release number"),
        ("tahoe=27", "tahoe is macOS 26 already"),
        ("redwood=26", "release 26 is tahoe already"),
        ("redwood=28,big_sky=28", "release 28 is redwood already"),
        ("redwood=28,redwood=29", "given twice"),
    ],
)
def test_bad_macos_releases_are_one_line_naming_the_variable(value: str, says: str) -> None:
    """A bad MIRRORD_MACOS_RELEASES stops the program with one line naming it and what
    is wrong; a known codename can never be given another number."""
    with pytest.raises(SettingsError) as caught:
        from_env({"MIRRORD_BUCKET": "b-1", "MIRRORD_MACOS_RELEASES": value})
    message = str(caught.value)
    assert message.startswith("MIRRORD_MACOS_RELEASES: "), message
    assert says in message, message
    assert "\n" not in message


def test_slack_names_unknown_tags_on_success_and_failure() -> None:
    """Both Slack messages name each unknown tag and say which setting takes it."""
    report = Report("j", DATE, planned=0, unknown_tags=("arm64_redwood", "redwood"))
    for message in (
        success_message(report, bucket="b"),
        failure_message(job_id="j", date=DATE, error=None, report=report, logs_hint="logs"),
    ):
        blocks = orjson.dumps(message.blocks).decode()
        for text in (message.text, blocks):
            assert "arm64_redwood" in text
            assert "redwood" in text
        assert "MIRRORD_MACOS_RELEASES" in blocks
        assert "redwood=&lt;release number&gt;" in blocks
    plain = success_message(Report("j", DATE, planned=0), bucket="b")
    assert "MIRRORD_MACOS_RELEASES" not in orjson.dumps(plain.blocks).decode()


async def test_sync_reports_unknown_tags_then_mirrors_them_once_configured(
    bucket_name: str, receiver: Receiver
) -> None:
    """Against the emulator: a sync names the unknown tags in a warning, the report and
    Slack, and mirrors no redwood bottle; with MIRRORD_MACOS_RELEASES=redwood=28 the
    next sync's auto targets include arm64_redwood, stores its bottle and reports none."""
    async with Emulator(catalog_from_entries(NEXT)) as emu:
        base = {"slack_webhook_url": receiver.url, "brew_mirror": False}
        async with open_app(make_settings(bucket_name, emu.api_url, **base)) as app:
            await app.s3.create_bucket(Bucket=bucket_name)
            with capture_logs() as logs:
                report = await run_job(app, Job("before", DATE), route="test")
        assert report.complete
        assert report.unknown_tags == ("arm64_redwood",)
        assert "arm64_redwood" not in report.platforms
        warning = next(e for e in logs if e["event"] == "unknown_macos_tags")
        assert warning["log_level"] == "warning"
        assert warning["tags"] == ["arm64_redwood"]
        assert "arm64_redwood" in receiver.bodies[-1]["text"]

        settings = make_settings(bucket_name, emu.api_url, macos_releases=REDWOOD, **base)
        async with open_app(settings) as app:
            report = await run_job(app, Job("after", DATE), route="test")
            found = await app.store.get("bottles_hash.json")
        assert found is not None
        hf = orjson.loads(found[0])
        assert report.complete
        assert report.unknown_tags == ()
        assert report.platforms[0] == "arm64_redwood"
        assert "jq-1.0-arm64_redwood" in hf["bottles"]
        assert hf["bottles"]["tahoe-only-1.0-arm64_tahoe"]  # redwood's fallback, stored once
        assert "unknown macOS tags" not in receiver.bodies[-1]["text"]


def test_job_messages_may_name_targets_of_the_extended_table() -> None:
    """The enqueuer writes auto's targets into the job: a message naming arm64_redwood is
    read with the same table (the daemon, the sync Lambda), not refused as poison."""
    body = orjson.dumps({"v": 1, "job_id": "j", "date": DATE, "platforms": ["arm64_redwood"]})
    assert parse_job(body, releases=REDWOOD).platforms == ("arm64_redwood",)
    with pytest.raises(JobError, match=r"^job\.platforms: 'arm64_redwood'"):
        parse_job(body)
    manual = {"source": "manual", "date": DATE, "platforms": ["arm64_redwood"]}
    assert job_from_event(manual, datetime.now(UTC), REDWOOD).platforms == ("arm64_redwood",)


SCHEDULED = {"source": "aws.events", "detail-type": "Scheduled Event", "time": f"{DATE}T03:00Z"}


async def test_cron_to_daemon_mirrors_the_new_release(bucket_name: str, receiver: Receiver) -> None:
    """With MIRRORD_MACOS_RELEASES set, the weekly job (enqueuer → SQS → daemon) carries
    arm64_redwood as a target and the daemon stores its bottle, instead of sending the
    message to the dead-letter queue."""
    async with (
        Emulator(catalog_from_entries(NEXT)) as emu,
        get_session().create_client("sqs") as sqs,
    ):
        queue_url = (await sqs.create_queue(QueueName=bucket_name))["QueueUrl"]
        settings = make_settings(
            bucket_name,
            emu.api_url,
            macos_releases=REDWOOD,
            queue_url=queue_url,
            slack_webhook_url=receiver.url,
            brew_mirror=False,
            heartbeat_seconds=1.0,
        )
        async with open_app(settings) as app:
            await app.s3.create_bucket(Bucket=bucket_name)
            job = job_from_event(SCHEDULED, datetime.now(UTC), app.settings.releases)
            result = await enqueue(app, job, invoke=None)
            assert result["platforms"][0] == "arm64_redwood"
            assert app.queue is not None
            stop = asyncio.Event()
            daemon = Daemon(app, app.queue, stop=stop, owner="d1")
            serving = asyncio.create_task(daemon.serve())
            for _ in range(300):
                if daemon.jobs_done or serving.done():
                    break
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.wait_for(serving, 30)
            assert daemon.jobs_done == 1
            hf, _ = await load_hashfile(app.store, "bottles_hash.json")
        assert "jq-1.0-arm64_redwood" in hf.bottles


async def test_nothing_to_do_still_names_unknown_tags(bucket_name: str, receiver: Receiver) -> None:
    """A new macOS often brings no new bottle for the known targets: the enqueuer then
    starts no sync, so it names the unknown tags itself (a warning and Slack)."""
    async with Emulator(catalog_from_entries(NEXT)) as emu:
        settings = make_settings(
            bucket_name,
            emu.api_url,
            queue_url="http://127.0.0.1:1/queue",
            slack_webhook_url=receiver.url,
            brew_mirror=False,
        )
        async with open_app(settings) as app:
            await app.s3.create_bucket(Bucket=bucket_name)
            job = job_from_event(SCHEDULED, datetime.now(UTC))
            assert (await run_job(app, job, route="test")).complete
            with capture_logs() as logs:
                result = await enqueue(app, job, invoke=None)
    assert result["route"] == "none"
    assert [e["tags"] for e in logs if e["event"] == "unknown_macos_tags"] == [["arm64_redwood"]]
    assert receiver.bodies[-1]["text"].startswith("mirrord: nothing to do")
    assert "unknown macOS tags: arm64_redwood" in receiver.bodies[-1]["text"]


class LambdaContext:
    """The Lambda runtime's context, as far as the sync handler asks it."""

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


async def test_sync_lambda_reads_its_event_with_the_extended_table(
    bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync Lambda's event (a job the enqueuer wrote) may name arm64_redwood when
    MIRRORD_MACOS_RELEASES is set where the Lambda runs."""
    async with Emulator(catalog_from_entries(NEXT)) as emu:
        async with open_app(make_settings(bucket_name)) as app:
            await app.s3.create_bucket(Bucket=bucket_name)
        for name, value in {
            "MIRRORD_BUCKET": bucket_name,
            "MIRRORD_API_URL": emu.api_url,
            "MIRRORD_MACOS_RELEASES": "redwood=28",
            "MIRRORD_BREW_MIRROR": "false",
        }.items():
            monkeypatch.setenv(name, value)
        event = {"v": 1, "job_id": "l1", "date": DATE, "platforms": ["arm64_redwood"]}
        out = await asyncio.to_thread(sync_handler, event, LambdaContext())
    assert out["platforms"] == ["arm64_redwood"]
    assert out["downloaded"] == out["planned"] == 3  # jq's own, tahoe-only's fallback, certs


def test_the_api_gap_check_follows_the_extended_table() -> None:
    """brew on a redwood Mac falls back to the tahoe bottle; the check that published API
    files never send brew to a missing bottle must see that fallback too, so it reads
    tags by the extended table. With the built-in one it saw no bottle, so no gap."""
    sha = "ab" * 32
    entry = {
        "name": "jq",
        "versions": {"stable": "1.7.1"},
        "bottle": {
            "stable": {
                "files": {
                    "arm64_tahoe": {
                        "cellar": ":any",
                        "url": f"https://ghcr.io/v2/homebrew/core/jq/blobs/sha256:{sha}",
                        "sha256": sha,
                    }
                }
            }
        },
    }
    files = {"formula.jws.json": jws(orjson.dumps([entry]))}
    assert api_gaps(files, ["arm64_redwood"], {}, releases=REDWOOD) == [
        "jq-1.7.1-arm64_tahoe (formula.jws.json)"
    ]
