"""The per-user cache of per-layer latency measurements: one JSON file per measurement.

Location: $EDGECOMP_CACHE_DIR if set (tests, CI), else $XDG_CACHE_HOME/edgecomp (when XDG_CACHE_HOME is an
absolute path, as the XDG spec asks), else ~/.cache/edgecomp. Entries live in its `latency-v1/` folder as
`<sha256 of the key>.json` (edgecomp.latency.keys), written atomically (edgecomp.io) and read back as data
only (json, never pickle). An entry is used only when its format tag and its stored key match the key asked
for and its latency is a finite number > 0; anything else (a truncated, edited or foreign file) is a miss:
re-measured and overwritten, never an error. A cache that cannot be written (read-only home) only loses
its reuse: the run goes on.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from edgecomp.io import write_json
from edgecomp.latency.keys import key_digest

FORMAT = "edgecomp-latency-cache/1"
FOLDER = "latency-v1"
MAX_ENTRY_BYTES = 1 << 20  # an entry is ~1 kB; a bigger file is not one of ours
_ENTRY = re.compile(r"^[0-9a-f]{64}\.json$")
_LEFTOVER = re.compile(r"^\.[0-9a-f]{64}\.json\.[A-Za-z0-9_]+\.tmp$")  # edgecomp.io's temporary sibling


def cache_root() -> Path:
    """edgecomp's per-user cache directory (see the module docstring)."""
    override = os.environ.get("EDGECOMP_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "edgecomp"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0  # entries found but unusable (counted among the misses)
    unwritable: int = 0  # measurements that could not be stored


def _normal(key: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(key, sort_keys=True))


class LatencyCache:
    """Per-layer latencies (ms) by key; `stats` counts this object's hits and misses."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else cache_root()
        self.folder = self.root / FOLDER
        self.stats = CacheStats()

    def path_of(self, key: Mapping[str, Any]) -> Path:
        return self.folder / f"{key_digest(key)}.json"

    def get(self, key: Mapping[str, Any]) -> float | None:
        """The stored latency for `key`, or None (absent, or unusable: then counted in stats.corrupt)."""
        path = self.path_of(key)
        try:
            if path.is_symlink() or not path.is_file():
                return None
            if path.stat().st_size > MAX_ENTRY_BYTES:
                raise ValueError("too big")
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("key") != _normal(key):
                raise ValueError("not this key's entry")
            value = doc.get("latency_ms")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError("not a latency")
        except (OSError, ValueError, UnicodeDecodeError):
            self.stats.corrupt += 1
            return None
        return float(value)

    def put(self, key: Mapping[str, Any], latency_ms: float) -> None:
        """Store one measurement (atomically); an unwritable cache is counted, not raised."""
        if not (math.isfinite(latency_ms) and latency_ms > 0):
            raise ValueError(f"a latency must be a finite number > 0 ms, got {latency_ms!r}")
        doc = {"format": FORMAT, "key": _normal(key), "latency_ms": float(latency_ms),
               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            write_json(self.path_of(key), doc)
        except OSError:
            self.stats.unwritable += 1

    def measure(self, key: Mapping[str, Any], measure: Callable[[], float], *, use_cache: bool = True) -> float:
        """The cached latency for `key`, else `measure()` stored under it. use_cache=False (--no-cache) never
        reads the cache: it measures afresh and overwrites the entry (a refresh)."""
        if use_cache:
            value = self.get(key)
            if value is not None:
                self.stats.hits += 1
                return value
        self.stats.misses += 1
        value = float(measure())
        self.put(key, value)
        return value

    def get_all(self, keys: Sequence[Mapping[str, Any]]) -> list[float] | None:
        """Every key's stored latency, or None when any is missing: a group measured together (one
        in-context timing group, edgecomp.pipeline.layer_timing) is reused whole or not at all."""
        values = [self.get(key) for key in keys]
        return None if any(v is None for v in values) else values

    def measure_group(self, keys: Sequence[Mapping[str, Any]], measure: Callable[[], Sequence[float]], *,
                      use_cache: bool = True, stored: list[float] | None = None) -> list[float]:
        """`measure` for a group of keys: the cached values when every key has one (`stored`: get_all's
        answer, when the caller already asked), else measure() -- one value per key, measured together --
        stored under them. use_cache=False measures afresh and overwrites, as `measure` does."""
        values = (stored if stored is not None else self.get_all(keys)) if use_cache else None
        if values is not None:
            self.stats.hits += len(keys)
            return values
        self.stats.misses += len(keys)
        values = [float(v) for v in measure()]
        if len(values) != len(keys):
            raise ValueError(f"measured {len(values)} values for {len(keys)} keys")
        for key, value in zip(keys, values):
            self.put(key, value)
        return values

    def _ours(self, path: Path) -> bool:
        """A file this cache wrote: an entry (by name and format tag) or a temporary sibling left by a kill."""
        if path.is_symlink() or not path.is_file():
            return False
        if _LEFTOVER.match(path.name):
            return True
        if not _ENTRY.match(path.name):
            return False
        try:
            if path.stat().st_size > MAX_ENTRY_BYTES:
                return False
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            return False  # edgecomp writes whole files only (edgecomp.io): a damaged one is not as it wrote it
        return isinstance(doc, dict) and doc.get("format") == FORMAT

    def clear(self) -> dict[str, Any]:
        """Delete every entry this cache wrote; any other file in its folder is kept (and listed)."""
        removed, kept = 0, []
        if self.folder.is_dir() and not self.folder.is_symlink():
            for path in sorted(self.folder.iterdir()):
                if self._ours(path):
                    path.unlink(missing_ok=True)
                    removed += 1
                else:
                    kept.append(path.name)
            if not kept:
                self.folder.rmdir()
        return {"path": str(self.folder), "removed": removed, "kept": kept}

    def info(self) -> dict[str, Any]:
        """Where the cache is, how many entries it holds and their size in bytes."""
        entries = size = 0
        if self.folder.is_dir():
            for path in self.folder.iterdir():
                if _ENTRY.match(path.name) and path.is_file() and not path.is_symlink():
                    entries += 1
                    size += path.stat().st_size
        return {"path": str(self.folder), "entries": entries, "size_bytes": size}
