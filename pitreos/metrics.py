"""Prometheus textfile-collector metrics (``--metrics-file``), for node_exporter.

One file can serve every pitreos run on a host: each run rewrites only the series of its
own operation and tag and keeps the others', and a failed run keeps the time of the last
success (an alert on "no success for 3 h" must not be reset by a failure). The file is
read, merged and replaced under an exclusive lock, and replaced atomically (written
beside, then renamed, by ``prometheus_client.write_to_textfile``), so node_exporter
never reads half a file.
"""

import fcntl
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError

PREFIX = "pitreos_"
LABELS = ("operation", "tag")
# name -> help; every series is labelled by operation and tag
METRICS = {
    "last_run_timestamp_seconds": "When the last run of this operation ended.",
    "last_success_timestamp_seconds": "When the last successful run ended.",
    "last_run_success": "1 if the last run succeeded, 0 if it failed.",
    "last_run_duration_seconds": "How long the last run took.",
    "last_run_bytes_read": "Bytes read from local files by the last run (backup).",
    "last_run_bytes_stored": "Compressed bytes sent to the store by the last run.",
    "last_run_bytes_fetched": "Bytes fetched from the store by the last run, as stored.",
    "last_run_bytes_written": "Bytes written to local files by the last run (restore).",
    "last_run_blobs_stored": "Blobs the last run added to the store.",
    "last_run_blobs_deleted": "Blobs the last run deleted (gc).",
    "last_run_bytes_freed": "Stored bytes the last run freed (gc).",
    "last_run_backups_deleted": "Backups the last run deleted (gc).",
    "last_run_blobs_checked": "Blobs the last run checked (verify).",
    "last_run_blobs_damaged": "Damaged or missing blobs the last run found (verify).",
    "head_block": "The head block number of the last backup of a nodeos directory.",
}
_KEPT_ON_FAILURE = {"last_success_timestamp_seconds", "head_block"}


@dataclass
class Run:
    """What a command reports about its run; ``values`` keys are names in METRICS."""

    operation: str
    tag: str = ""
    values: dict[str, float] = field(default_factory=dict)


@contextmanager
def recorded(path: Path | None, run: Run) -> Iterator[Run]:
    """Write the metrics of ``run`` to ``path`` when the block ends, failed or not (a
    failure is recorded and re-raised)."""
    started = time.monotonic()
    try:
        yield run
    except BaseException:
        if path is not None:
            write(path, run, ok=False, duration=time.monotonic() - started)
        raise
    if path is not None:
        write(path, run, ok=True, duration=time.monotonic() - started)


def write(path: Path, run: Run, *, ok: bool, duration: float,
          now: float | None = None) -> None:
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    now = time.time() if now is None else now
    ours = {"last_run_timestamp_seconds": now, "last_run_success": 1.0 if ok else 0.0,
            "last_run_duration_seconds": round(duration, 3)}
    if ok:
        ours["last_success_timestamp_seconds"] = now
        ours.update(run.values)
    key = (run.operation, run.tag)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            series = _read(path)
            mine = {name: v for name, v in series.get(key, {}).items()
                    if name in _KEPT_ON_FAILURE}
            mine.update(ours)
            series[key] = mine
            registry = CollectorRegistry()
            for name, help_text in METRICS.items():
                gauge = Gauge(PREFIX + name, help_text, LABELS, registry=registry)
                for (operation, tag), values in sorted(series.items()):
                    if name in values:
                        gauge.labels(operation, tag).set(values[name])
            write_to_textfile(str(path), registry)
    except OSError as exc:
        raise UsageError(f"cannot write --metrics-file {path}: {exc.strerror or exc}") from exc


def _read(path: Path) -> dict[tuple[str, str], dict[str, float]]:
    """The series an earlier run wrote (unknown metrics and a damaged file are dropped:
    the file is ours)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    series: dict[tuple[str, str], dict[str, float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            name = family.name.removeprefix(PREFIX)
            if name not in METRICS:
                continue
            for sample in family.samples:
                labels: Mapping[str, str] = sample.labels
                key = (labels.get("operation", ""), labels.get("tag", ""))
                series.setdefault(key, {})[name] = float(sample.value)
    except ValueError:
        return {}
    return series
