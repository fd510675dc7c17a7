"""OCI as GHCR serves Homebrew: where brew looks for an image index and a blob, and what
an image index says about each bottle (its ``sh.brew.*`` annotations). Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from mirrord.core.errors import InputError

OCI_PREFIX = "v2/homebrew/core/"

# OCI's repository path grammar (distribution spec): no empty, "." or ".." segment, and
# nothing a URL or a CDN would normalise into another path.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
# Characters an OCI tag may not hold; brew writes them as ".".
_OCI_TAG_INVALID = re.compile(r"[^A-Za-z0-9._-]")


def image_name(name: str) -> str | None:
    """brew's GHCR repository of a formula: ``@`` → ``/``, ``+`` → ``x`` (openssl@3 →
    openssl/3, libxml++ → libxmlxx); None when that is no OCI repository path."""
    image = name.replace("@", "/").replace("+", "x")
    return image if len(image) <= 255 and _IMAGE_RE.fullmatch(image) else None


def manifest_ref(pkg_version: str, rebuild: int) -> str:
    """The tag of a formula version's image index: ``<pkg_version>[-<rebuild>]``."""
    return _OCI_TAG_INVALID.sub(".", pkg_version + (f"-{rebuild}" if rebuild else ""))


def index_key(image: str, ref: str) -> str:
    return f"{OCI_PREFIX}{image}/manifests/{ref}"


def blob_key(image: str, sha256: str) -> str:
    return f"{OCI_PREFIX}{image}/blobs/sha256:{sha256}"


def tags_key(image: str) -> str:
    """OCI distribution's tag listing of an image (``GET /v2/<name>/tags/list``)."""
    return f"{OCI_PREFIX}{image}/tags/list"


def ref_name(pkg_version: str, tag: str, rebuild: int) -> str:
    """``org.opencontainers.image.ref.name`` of one bottle in its image index."""
    return f"{pkg_version}.{tag}" + (f".{rebuild}" if rebuild else "")


@dataclass(frozen=True, slots=True)
class Descriptor:
    """One manifest of an image index, by the annotations brew reads. The index is the
    registry's word: a value that is not a string is None."""

    digest: str | None  # sh.brew.bottle.digest, without "sha256:"
    ref_name: str | None  # org.opencontainers.image.ref.name
    size: str | None  # sh.brew.bottle.size, as written (a number, one hopes)
    tab: str | None  # sh.brew.tab


def descriptors(index: Any) -> list[Descriptor] | None:
    """The annotated manifests of an image index, in its order (those without an
    annotations object are left out); None when it has no manifests list at all."""
    manifests = index.get("manifests") if isinstance(index, Mapping) else None
    if not isinstance(manifests, list):
        return None
    found: list[Descriptor] = []
    for manifest in manifests:
        notes = manifest.get("annotations") if isinstance(manifest, dict) else None
        if not isinstance(notes, dict):
            continue
        digest, ref, size, tab = (
            v if isinstance(v := notes.get(k), str) else None
            for k in (
                "sh.brew.bottle.digest",
                "org.opencontainers.image.ref.name",
                "sh.brew.bottle.size",
                "sh.brew.tab",
            )
        )
        found.append(Descriptor(digest and digest.removeprefix("sha256:"), ref, size, tab))
    return found


def descriptor_problem(index: Any, sha256: str, ref: str) -> str | None:
    """None when ``index`` holds the descriptor brew looks for (digest and ref.name
    equal, ``sh.brew.tab`` present), else why not."""
    found = descriptors(index)
    if found is None:
        return "image index has no manifests list"
    for d in found:
        if d.digest == sha256 and d.ref_name == ref:
            return None if d.tab else f"descriptor {ref} has no sh.brew.tab"
    return f"no descriptor with sh.brew.bottle.digest {sha256[:12]}… and ref.name {ref}"


def listed_tags(raw: bytes, source: str) -> list[Any]:
    """``tags`` of a tags/list answer (``{"name": …, "tags": [...]}``; null when the
    image has none), or ``InputError`` naming the file."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{source}: not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InputError(f"{source}: must be an object with a tags list")
    tags = document.get("tags")
    if tags is None:
        return []
    if not isinstance(tags, list):
        raise InputError(f"{source}: tags must be a list")
    return tags
