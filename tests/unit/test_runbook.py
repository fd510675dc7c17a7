"""The runbooks keep their promise: every command in them is one a test runs, or says why
none can here.

In docs/operations.md, docs/first-deploy.md and infra/bootstrap/README.md (those that
exist), every fenced ``sh`` block is immediately preceded by one HTML comment line:
``<!-- tested: tests/<path>.py::<test_name> -->``, naming a test function that exists
(found with ast, nothing imported), or ``<!-- untested: <reason> -->``. docs/operations.md
also has one ``#alarm-<suffix>`` anchor for every alarm infra/ creates, and its own
``(#…)`` links lead somewhere.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ("docs/operations.md", "docs/first-deploy.md", "infra/bootstrap/README.md")
OPERATIONS = ROOT / "docs" / "operations.md"

FENCE = re.compile(r"^\s*```(\S*)\s*$")
TESTED = re.compile(r"^<!-- tested: (tests/[\w/.-]+\.py)::(test_\w+) -->$")
UNTESTED = re.compile(r"^<!-- untested: (.+?) -->$")
MIN_REASON = 12  # characters: "no aws CLI here" is a reason, "n/a" is not


@cache
def defined_tests(path: str) -> frozenset[str]:
    """The test functions a test file defines (module level, or in a class)."""
    file = ROOT / path
    if not file.is_file():
        return frozenset()
    tree = ast.parse(file.read_text(), filename=str(file))
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    )


def sh_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, the line before it) of every fenced sh block that opens."""
    lines = text.splitlines()
    found: list[tuple[int, str]] = []
    inside = False
    for i, line in enumerate(lines):
        fence = FENCE.match(line)
        if not fence:
            continue
        if inside:
            inside = False
            continue
        inside = True
        if fence.group(1) in ("sh", "bash", "shell", "console"):
            found.append((i + 1, lines[i - 1].strip() if i else ""))
    return found


def problems(text: str, name: str) -> list[str]:
    """What is wrong with the runbook ``text`` (shown as ``name``), one line each."""
    out = []
    for number, before in sh_blocks(text):
        where = f"{name}:{number}"
        if tested := TESTED.match(before):
            path, test = tested.groups()
            if test not in defined_tests(path):
                out.append(f"{where}: tested by {path}::{test}, which does not exist")
        elif untested := UNTESTED.match(before):
            if len(untested.group(1).strip()) < MIN_REASON:
                out.append(f"{where}: untested, but the reason is too short to be one")
        else:
            out.append(f"{where}: no <!-- tested: … --> or <!-- untested: … --> line before it")
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    found = {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}
    found |= set(re.findall(r'<a id="([^"]+)"></a>', text))
    return found


def alarm_suffixes() -> set[str]:
    """Every ``alarm_name = "${var.name}-<suffix>"`` under infra/ (an interpolation in
    the suffix reads as N: no-success-${var.success_window_days}d is no-success-Nd)."""
    suffixes = set()
    for tf in (ROOT / "infra").rglob("*.tf"):
        if ".terraform" in tf.parts:
            continue
        for raw in re.findall(r'alarm_name\s*=\s*"\$\{var\.name\}-([^"]+)"', tf.read_text()):
            suffixes.add(re.sub(r"\$\{[^}]+\}", "N", raw))
    return suffixes


# --- the runbooks --------------------------------------------------------------------


def test_operations_runbook_exists() -> None:
    assert OPERATIONS.is_file()


@pytest.mark.parametrize("runbook", RUNBOOKS)
def test_every_command_block_is_tested_or_says_why_not(runbook: str) -> None:
    path = ROOT / runbook
    assert path.is_file(), f"{runbook}: missing"
    text = path.read_text()
    assert sh_blocks(text), f"{runbook}: no command block at all"
    assert problems(text, runbook) == []


def test_every_alarm_has_its_runbook_anchor() -> None:
    """An operator paged by <prefix>-<suffix> finds docs/operations.md#alarm-<suffix>."""
    suffixes = alarm_suffixes()
    assert "dlq-not-empty" in suffixes, suffixes  # the scan found the alarms at all
    missing = sorted(
        f"alarm-{s}" for s in suffixes if f"alarm-{s}" not in anchors(OPERATIONS.read_text())
    )
    assert missing == [], f"docs/operations.md lacks the anchors {missing}"


# Alarms that never reach the topic: the autoscaling triggers and the composite's halves.
NOT_NOTIFIED = {"queue-has-work", "queue-drained", "no-success-Nd", "enqueue-idle-1d"}


def test_every_notifying_alarm_links_its_own_runbook_section_from_slack() -> None:
    """The alarm Lambda's message names docs/operations.md#alarm-<suffix>: a new alarm in
    infra/ that core.alarms does not know would link the generic list instead."""
    from mirrord.core.alarms import ALARM_SUFFIXES, runbook_anchor

    unknown = sorted(alarm_suffixes() - set(ALARM_SUFFIXES) - NOT_NOTIFIED)
    assert unknown == [], f"add to mirrord.core.alarms.ALARM_SUFFIXES: {unknown}"
    for suffix in ALARM_SUFFIXES:
        assert runbook_anchor(f"mirrord-prod-{suffix}").endswith(f"#alarm-{suffix}")


def test_links_inside_the_runbook_lead_somewhere() -> None:
    text = OPERATIONS.read_text()
    known = anchors(text)
    broken = sorted({a for a in re.findall(r"\]\(#([^)]+)\)", text) if a not in known})
    assert broken == [], broken


def test_readme_points_to_the_runbook() -> None:
    assert "docs/operations.md" in (ROOT / "README.md").read_text()


# --- the checker itself ----------------------------------------------------------------

GOOD_TEST = "tests/unit/test_runbook.py::test_operations_runbook_exists"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"<!-- tested: {GOOD_TEST} -->\n```sh\nmirrord sync\n```\n", []),
        ("<!-- untested: no aws CLI here, by design -->\n```sh\naws s3 ls\n```\n", []),
        ("Run:\n\n```sh\nmirrord sync\n```\n", ["rb:3: no <!-- tested"]),
        (
            "<!-- tested: tests/unit/test_runbook.py::test_nothing_of_the_sort -->\n```sh\nx\n```\n",
            ["rb:2: tested by tests/unit/test_runbook.py::test_nothing_of_the_sort, which"],
        ),
        (
            "<!-- tested: tests/unit/no_such_file.py::test_x -->\n```sh\nx\n```\n",
            ["rb:2: tested by tests/unit/no_such_file.py::test_x, which"],
        ),
        ("<!-- untested: n/a -->\n```sh\nx\n```\n", ["rb:2: untested, but the reason"]),
        # A comment line with a blank line before the block does not count.
        (f"<!-- tested: {GOOD_TEST} -->\n\n```sh\nx\n```\n", ["rb:3: no <!-- tested"]),
        # Other languages, and fences inside a block, are no sh blocks.
        ("```hcl\nterraform {}\n```\n```json\n{}\n```\n", []),
    ],
    ids=["tested", "untested", "bare", "no-such-test", "no-such-file", "short", "gap", "other"],
)
def test_the_checker_finds_what_is_wrong(text: str, expected: list[str]) -> None:
    found = problems(text, "rb")
    assert len(found) == len(expected), found
    for line, start in zip(found, expected, strict=True):
        assert line.startswith(start), (line, start)


def test_anchors_follow_github() -> None:
    assert slug("Reading status.json") == "reading-statusjson"
    assert "alarm-x" in anchors('<a id="alarm-x"></a>\n### x\n')
