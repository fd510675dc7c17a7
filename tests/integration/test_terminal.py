"""What a person at a terminal sees (issue 13, items 9 and 10): readable log lines above
the progress bar, -q/-v, Ctrl-C once and twice, --help, errors that name what was typed,
check-client without AWS, and a `mirrord health` that imports almost nothing.

The terminal is a real pseudo-terminal (pty): mirrord decides from ``isatty()`` as it
does in a shell. The peers are the moto server and the emulator, as everywhere.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from conftest import DATE, ROOT, MakeWorld, loopback, run_cli
from mirrord_dev.emulator import Emulator, Fault, synthetic_catalog

from mirrord.app import App
from mirrord.cli import main
from mirrord.cli_args import build_parser
from mirrord.core.settings import from_env

MiB = 2**20
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d \[(debug|info|warning|error)\s*\] \w+")


@dataclass
class Peers:
    app: App
    emu: Emulator

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "MIRRORD_BUCKET": self.app.settings.bucket,
            "MIRRORD_API_URL": self.emu.api_url,
            "MIRRORD_PART_SIZE": "5MiB",
            **extra,
        }

    async def open_uploads(self) -> int:
        answer = await self.app.s3.list_multipart_uploads(Bucket=self.app.settings.bucket)
        return len(answer.get("Uploads", []))


@pytest.fixture
async def peers(make_world: MakeWorld) -> Peers:
    made = await make_world()
    return Peers(made.app, made.emu)


@pytest.fixture
async def stalled(make_world: MakeWorld) -> Peers:
    """Six bottles of 7-8 MB that each stop after 6 MiB: the first 5 MiB part is
    uploaded, then the transfer hangs in flight with its multipart upload open."""
    made = await make_world(synthetic_catalog(6, sizes=(7_000_000, 8_000_000)))
    for sha256 in made.emu.catalog.blobs:
        made.emu.set_faults(sha256, [Fault("stall", after=6 * MiB, times=None)])
    return Peers(made.app, made.emu)


async def until(check: Callable[[], Any], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds}s: {what}")
        await asyncio.sleep(0.1)


# --- a process on a pseudo-terminal -----------------------------------------------------


@dataclass
class Terminal:
    """``mirrord …`` with stdin, stdout and stderr on a pty of 160×40, as in a shell."""

    proc: asyncio.subprocess.Process
    master: int
    raw: bytearray = field(default_factory=bytearray)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def read(self) -> None:
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: every writer is gone
            chunk = b""
        if chunk:
            self.raw += chunk
        else:
            asyncio.get_running_loop().remove_reader(self.master)
            self.closed.set()

    @property
    def text(self) -> str:
        return self.raw.decode(errors="replace")

    def screen(self) -> list[str]:
        """The lines as they stay on the screen: a carriage return starts the line over
        (the bar redraws itself that way), colours removed."""
        lines = []
        for line in ANSI.sub("", self.text).split("\n"):
            lines.append(line.rstrip("\r").rsplit("\r", 1)[-1].rstrip())
        return [line for line in lines if line]

    async def finish(self, seconds: float = 120) -> int:
        try:
            code = await asyncio.wait_for(self.proc.wait(), seconds)
            await asyncio.wait_for(self.closed.wait(), 10)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            asyncio.get_running_loop().remove_reader(self.master)
            os.close(self.master)
        return code


async def in_terminal(*args: str, env: dict[str, str], term: str = "dumb") -> Terminal:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mirrord",
        *args,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**os.environ, "TERM": term, "COLUMNS": "160", **env},
        cwd=ROOT,
    )
    os.close(slave)
    os.set_blocking(master, False)
    terminal = Terminal(proc, master)
    asyncio.get_running_loop().add_reader(master, terminal.read)
    return terminal


# --- item 9: logs, bar, metrics record, -q/-v, Ctrl-C, --help ---------------------------


async def test_a_terminal_gets_readable_lines_above_the_bar_and_no_metrics_record(
    peers: Peers,
) -> None:
    """stderr a TTY: one human line per event, each on its own line (never glued to the
    bar), the bar at 100 %, no JSON, no EMF record, no colours on TERM=dumb."""
    # A checkpoint every 3 bottles: log lines while the bar is drawn.
    term = await in_terminal("sync", "--date", DATE, "--batch-size", "3", env=peers.env())
    assert await term.finish() == 0, term.text[-3000:]
    screen = term.screen()
    assert sum("] checkpoint " in line for line in screen) > 3, screen
    events = [line for line in screen if LOG_LINE.match(line)]
    for event in ("catalog_loaded", "plan", "checkpoint", "sync_done"):
        assert any(f"] {event} " in line for line in events), (event, screen)
    # Every line that carries an event starts with it: none was written into the bar.
    assert all(LOG_LINE.match(line) for line in screen if "job_id=" in line), screen
    assert any("100%" in line and "bottle" in line for line in screen), screen
    assert not any(line.lstrip().startswith("{") for line in screen), screen
    assert "_aws" not in term.text
    assert "metrics" not in term.text
    assert "\x1b[" not in term.text  # TERM=dumb: no colour codes
    assert any("downloaded" in line for line in screen)  # the summary (stdout, same pty)


async def test_the_publication_shows_progress_too(peers: Peers) -> None:
    """After the bottles, the brew-6 publication (some 8,000 formula versions on a first
    sync of a whole mirror) gets a bar of its own in a terminal, counted in versions, and
    structured `publish_progress` lines elsewhere."""
    term = await in_terminal("sync", "--date", DATE, env=peers.env())
    assert await term.finish() == 0, term.text[-3000:]
    screen = term.screen()
    assert any("100%" in line and "version" in line for line in screen), screen
    piped = await run_cli("sync", "--date", DATE, env=peers.env())
    assert piped.code == 0, piped.stderr[-2000:]
    (last,) = [e for e in piped.logs() if e.get("event") == "publish_progress"]
    assert last["done"] == last["total"] > 0


@pytest.mark.parametrize(("term", "extra", "colours"), [
    ("xterm-256color", {}, True),
    ("xterm-256color", {"NO_COLOR": "1"}, False),
    ("dumb", {}, False),
])  # fmt: skip
async def test_colours_only_where_the_terminal_shows_them(
    peers: Peers, term: str, extra: dict[str, str], colours: bool
) -> None:
    run = await in_terminal("plan", "--date", DATE, env=peers.env(**extra), term=term)
    assert await run.finish() == 0, run.text[-3000:]
    logged = [line for line in run.text.split("\n") if "catalog_loaded" in line]
    assert logged, run.text[-3000:]
    assert ("\x1b[" in logged[0]) is colours


async def test_quiet_shows_no_bar_and_only_warnings(peers: Peers) -> None:
    """-q before or after the command: the summary alone, no bar, no info lines."""
    for args in (("-q", "sync"), ("sync", "-q")):
        run = await in_terminal(*args, "--date", DATE, "--formula", "jq", env=peers.env())
        assert await run.finish() == 0, run.text[-3000:]
        screen = run.screen()
        assert not any("bottle/s" in line or "%|" in line for line in screen), screen
        assert not any("[info" in line for line in screen), screen
        assert any("downloaded" in line or "already mirrored" in line for line in screen)


def test_quiet_and_verbose_are_global_flags_before_or_after_the_command() -> None:
    parse = build_parser().parse_args
    assert parse(["-q", "sync"]).log_level == "warning"
    assert parse(["sync", "--quiet"]).log_level == "warning"
    assert parse(["-v", "plan"]).log_level == "debug"
    assert parse(["plan", "-v", "--json"]).log_level == "debug"
    assert parse(["config", "validate", "-q"]).log_level == "warning"
    assert parse(["verify"]).log_level is None  # MIRRORD_LOG_LEVEL decides
    with pytest.raises(SystemExit):
        parse(["sync", "-q", "-v"])


async def test_one_ctrl_c_says_what_happens_and_the_summary_counts_what_remains(
    stalled: Peers,
) -> None:
    """The first Ctrl-C: a line on the terminal saying what is being finished and how
    to stop at once; the sync then ends as after SIGTERM (grace, checkpoint, exit 1) and
    its summary says how many bottles remain."""
    env = stalled.env(MIRRORD_STOP_GRACE="1", MIRRORD_READ_TIMEOUT="600")
    run = await in_terminal(
        "sync", "--date", DATE, "--platform", "arm64_sonoma", "--concurrency", "3", env=env
    )
    try:
        await until(lambda: _uploads_at_least(stalled, 3), 60, "three uploads in flight")
    finally:  # finish() also ends the process if the wait failed
        run.proc.send_signal(signal.SIGINT)
        code = await run.finish(60)
    assert code == 1, run.text[-3000:]
    screen = run.screen()
    said = "mirrord: stopping: finishing 3 transfers in flight (up to 1s), Ctrl-C again to stop now"
    assert said in screen, screen
    stopped = [line for line in screen if line.startswith("stopped early:")]
    assert stopped, screen
    left, planned = map(int, re.findall(r"(\d+) of (\d+) bottles remain", stopped[0])[0])
    assert left == planned > 0  # every bottle stalls: none was finished
    assert await stalled.open_uploads() == 0  # the grace ran out: aborted, as before


async def _uploads_at_least(peers: Peers, n: int) -> bool:
    return await peers.open_uploads() >= n


async def test_a_second_ctrl_c_stops_at_once_and_aborts_the_uploads(stalled: Peers) -> None:
    """With a grace of a minute, the second SIGINT ends the sync within seconds: exit
    130, the multipart uploads in flight aborted, what remains said (here: in a pipe,
    as log events)."""
    env = {**os.environ, **stalled.env(MIRRORD_STOP_GRACE="60", MIRRORD_READ_TIMEOUT="600")}
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "mirrord", "sync", "--date", DATE),
        *("--platform", "arm64_sonoma", "--concurrency", "3"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    events: list[dict[str, Any]] = []

    async def collect() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            if line.startswith(b"{"):
                events.append(orjson.loads(line))

    reader = asyncio.create_task(collect())

    async def logged(name: str) -> bool:
        return any(e.get("event") == name for e in events)

    try:
        await until(lambda: _uploads_at_least(stalled, 3), 60, "three uploads in flight")
        proc.send_signal(signal.SIGINT)
        await until(lambda: logged("interrupted"), 10, "the first interrupt logged")
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        code = await asyncio.wait_for(proc.wait(), 20)
        took = time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await reader
    assert code == 130
    assert took < 15  # not the 60 s grace
    first = next(e for e in events if e["event"] == "interrupted")
    assert first["in_flight"] == 3
    plan = next(e for e in events if e["event"] == "plan")
    end = next(e for e in events if e["event"] == "stopped_at_once")
    assert end["remaining"] == plan["transfers"]
    assert await stalled.open_uploads() == 0


def test_help_lists_every_command_in_plain_text() -> None:
    """`mirrord --help`: a plain sentence, then each command with its one-line help."""
    parser = build_parser()
    text = parser.format_help()
    assert "``" not in text  # a docstring's markup was the description
    commands = next(
        a for a in parser._actions if a.dest == "command"
    ).choices  # every command the parser knows
    assert commands
    for name, sub in commands.items():
        line = next((ln for ln in text.splitlines() if ln.split()[:1] == [name]), None)
        assert line is not None, (name, text)
        assert line.split(None, 1)[1].strip() + "." == sub.description  # its own help
    assert "COMMAND" in text.splitlines()[0]  # usage


# --- item 10: names typed, check-client without AWS, a light health check --------------


@pytest.mark.parametrize(("args", "env", "named"), [
    (["sync", "--platform", "arm64_windows"], {}, "--platform:"),
    (["plan", "--platform", "arm64_tahoe,arm64_windows"], {}, "--platform:"),
    (["sync", "--part-size", "1MiB"], {}, "--part-size:"),
    (["sync", "--concurrency", "0"], {}, "--concurrency:"),
    (["sync"], {"MIRRORD_PLATFORMS": "arm64_windows"}, "MIRRORD_PLATFORMS:"),
    (["sync"], {"MIRRORD_PART_SIZE": "1MiB"}, "MIRRORD_PART_SIZE:"),
    (["plan"], {"MIRRORD_BUCKET": ""}, "MIRRORD_BUCKET (or --bucket):"),
    (["check-client", "--target", "arm64_windows", "--base", "http://m.example"], {},
     "--target:"),
    (["check-client", "--target", "arm64_tahoe", "--base", "ftp://m.example"], {}, "--base:"),
])  # fmt: skip
def test_errors_name_the_flag_or_variable_typed(
    capsys: pytest.CaptureFixture[str], args: list[str], env: dict[str, str], named: str
) -> None:
    assert main(args, {"MIRRORD_BUCKET": "b-1", **env}) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1
    assert said[0].startswith(f"mirrord: {named} "), said


async def test_daemon_without_a_queue_names_the_flag_and_the_variable() -> None:
    result = await run_cli("daemon", env={"MIRRORD_BUCKET": "b-1"})
    assert result.code == 2
    assert result.stderr.decode().startswith(
        "mirrord: MIRRORD_QUEUE_URL (or --queue-url): required"
    )


async def test_check_client_needs_no_aws_region() -> None:
    """HTTP only: with no region (nor credentials) it walks the mirror and reports what
    is missing (exit 1), instead of exit 2 "no AWS region"."""

    async def nothing(_: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", nothing)
    async with loopback(app) as url:
        env = {
            "AWS_DEFAULT_REGION": "",
            "AWS_ACCESS_KEY_ID": "",
            "AWS_SECRET_ACCESS_KEY": "",
            "AWS_CONFIG_FILE": os.devnull,
        }
        result = await run_cli(
            "check-client", "--base", url, "--target", "arm64_sonoma", "--json", env=env
        )
    assert result.code == 1, result.stderr.decode()[-2000:]
    assert b"region" not in result.stderr
    assert result.json()["complete"] is False


HEAVY = ("aiobotocore", "botocore", "aiohttp", "structlog", "tqdm", "msgspec", "mirrord.cli")


def test_health_imports_none_of_the_program(tmp_path: Any) -> None:
    """`mirrord` as installed (the console-script entry point) and `python -m mirrord`:
    `health` loads neither the AWS SDK nor aiohttp nor the CLI (~1 s of CPU each minute on
    ECS before)."""
    beat = tmp_path / "alive"
    beat.touch()
    probe = (
        "import json, sys\n"
        "from importlib.metadata import entry_points\n"
        "(ep,) = entry_points(group='console_scripts', name='mirrord')\n"
        "code = ep.load()(sys.argv[1:])\n"
        f"heavy = sorted(m for m in sys.modules if m.startswith({HEAVY!r}))\n"
        "print(json.dumps([code, heavy]))\n"
    )
    env = {**os.environ, "MIRRORD_HEALTH_FILE": str(beat)}
    for args in (["health"], ["-q", "health", "--max-age", "60"]):
        out = subprocess.run(
            [sys.executable, "-c", probe, *args], env=env, capture_output=True, check=True
        )
        assert orjson.loads(out.stdout) == [0, []], out
    # python -m mirrord: the module run as __main__, every import listed by -X importtime
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mirrord", "health"],
        env=env,
        capture_output=True,
        check=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.decode().splitlines()}
    assert not {m for m in imported if m.startswith(HEAVY)}, sorted(imported)


async def test_health_reads_only_its_own_settings_and_says_why_it_fails(tmp_path: Any) -> None:
    """A bad setting the check does not use never fails it (ECS would replace a working
    daemon); a bad one it uses is named; a failure says why."""
    beat = tmp_path / "alive"
    beat.touch()
    ok = await run_cli(
        "health", env={"MIRRORD_HEALTH_FILE": str(beat), "MIRRORD_PLATFORMS": "arm64_windows"}
    )
    assert ok.code == 0, ok.stderr
    bad = await run_cli(
        "health", env={"MIRRORD_HEALTH_FILE": str(beat), "MIRRORD_HEARTBEAT_SECONDS": "soon"}
    )
    assert bad.code == 2
    assert bad.stderr.decode().startswith("mirrord: MIRRORD_HEARTBEAT_SECONDS: ")
    missing = await run_cli("health", env={"MIRRORD_HEALTH_FILE": str(tmp_path / "none")})
    assert missing.code == 1
    assert "no heartbeat file" in missing.stderr.decode()


# --- the metrics record where CloudWatch reads it -----------------------------------------


def test_emf_setting_follows_the_runtime_or_the_variable() -> None:
    base = {"MIRRORD_BUCKET": "b-1"}
    assert from_env(base).emf is False
    assert from_env({**base, "AWS_LAMBDA_FUNCTION_NAME": "mirrord-sync"}).emf is True
    assert from_env({**base, "ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/x"}).emf
    assert from_env({**base, "MIRRORD_EMF": "true"}).emf is True
    assert from_env({**base, "AWS_LAMBDA_FUNCTION_NAME": "f", "MIRRORD_EMF": "0"}).emf is False


async def test_metrics_record_only_on_ecs_lambda_or_when_asked(peers: Peers) -> None:
    """A sync on a host (here: logs in a pipe) logs no EMF record; the same on ECS does."""
    here = await run_cli("sync", "--date", DATE, "--formula", "jq", env=peers.env())
    assert here.code == 0, here.stderr[-2000:]
    assert not [e for e in here.logs() if e.get("event") == "metrics"]
    ecs = peers.env(ECS_CONTAINER_METADATA_URI_V4="http://169.254.170.2/v4/task")
    there = await run_cli("sync", "--date", DATE, "--formula", "jq", env=ecs)
    assert there.code == 0, there.stderr[-2000:]
    (record,) = [e for e in there.logs() if e.get("event") == "metrics"]
    assert record["Route"] == "cli"
    assert "_aws" in record
