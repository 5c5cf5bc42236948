"""The prepared-graph cache: one ``.npz`` of plain arrays per site and settings.

Entries live under ``fleet.paths.cache_dir() / "roads"`` and are keyed by the SHA-256 of the
OSM extract, of the operating-area file, the site's road settings, the van's top speed and
:data:`FORMAT_VERSION`. An entry whose key, arrays or consistency checks do not match is
rebuilt, never trusted. Writes go to a temporary file renamed into place, so a crash never
leaves half an entry behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from fleet.paths import cache_dir
from fleet.roads.prepared import PreparedGraph

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump whenever prepare.py or PreparedGraph change what they produce

_ARRAYS = (
    "node_id",
    "node_lon",
    "node_lat",
    "link_u",
    "link_v",
    "link_len_cm",
    "link_class",
    "link_name",
    "geom_offsets",
    "geom_lon",
    "geom_lat",
    "edge_link",
    "edge_reversed",
    "edge_time_ms",
)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(
    osm_sha256: str, area_sha256: str, excluded_highways: tuple[str, ...], top_speed_kmh: float
) -> str:
    settings = {
        "format": FORMAT_VERSION,
        "osm_sha256": osm_sha256,
        "area_sha256": area_sha256,
        "exclude_highways": sorted(set(excluded_highways)),
        "top_speed_kmh": float(top_speed_kmh),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def cache_path(site_name: str, key: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", site_name.lower()).strip("-") or "site"
    return cache_dir() / "roads" / f"{slug}-{key[:24]}.npz"


def read_cached(path: Path, key: str) -> PreparedGraph | None:
    """The graph stored at ``path`` for ``key``, or ``None`` if absent, stale or damaged."""
    if not path.is_file():
        return None
    try:
        # our own file object: np.load leaks its handle when the archive is damaged
        with path.open("rb") as fh, np.load(fh, allow_pickle=False) as data:
            stored_key = str(data["key"])
            if stored_key != key:
                log.warning("%s: cache entry is for other inputs; rebuilding", path)
                return None
            names = json.loads(str(data["strings"]))
            graph = PreparedGraph(
                **{name: np.asarray(data[name]) for name in _ARRAYS},
                classes=tuple(str(c) for c in names["classes"]),
                names=tuple(str(n) for n in names["names"]),
            )
        graph.check()
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("%s: damaged cache entry (%s); rebuilding", path, exc)
        return None
    return graph


def write_cached(path: Path, key: str, graph: PreparedGraph) -> None:
    """Store ``graph`` atomically; a cache that cannot be written only costs speed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh,
                    key=np.asarray(key),
                    strings=np.asarray(
                        json.dumps({"classes": graph.classes, "names": graph.names})
                    ),
                    **{name: getattr(graph, name) for name in _ARRAYS},
                )
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.warning("cannot write the road-graph cache %s: %s", path, exc)
