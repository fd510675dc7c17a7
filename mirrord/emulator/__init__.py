"""Offline stand-in for formulae.brew.sh, ghcr.io and GHCR's blob storage (tests, run-local,
benchmarks). Imports nothing from the rest of mirrord."""

from mirrord.emulator.content import (
    INDEX_MEDIA_TYPE,
    Blob,
    EmulatorCatalog,
    blob_bytes,
    catalog_from_entries,
    image_index,
    image_name,
    sample_catalog,
    synthetic_catalog,
)
from mirrord.emulator.server import BlobStats, Emulator, Fault, faults_from_json, parse_range

__all__ = [
    "INDEX_MEDIA_TYPE",
    "Blob",
    "BlobStats",
    "Emulator",
    "EmulatorCatalog",
    "Fault",
    "blob_bytes",
    "catalog_from_entries",
    "faults_from_json",
    "image_index",
    "image_name",
    "parse_range",
    "sample_catalog",
    "synthetic_catalog",
]
