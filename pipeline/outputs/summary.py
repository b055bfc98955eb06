"""``summary.json`` (reconciled counts, configuration, versions, timings) and ``shardindex.json``."""

from __future__ import annotations

import dataclasses

import platform
import time
from collections import Counter
from dataclasses import dataclass

from pipeline.results import PIPELINE_VERSION
from pipeline.outputs.layout import OutputLayout
from pipeline.storage.atomic import write_json_atomic
from pipeline.outputs.shards import shard_index
from pipeline.outputs.tables import write_failures
from pipeline.errors import AccountingError  # noqa: F401 (re-exported)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"nccurate": PIPELINE_VERSION, "python": platform.python_version()}
    for name in ("apache-beam", "numpy", "pyarrow", "pot", "webdataset"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def reconcile(summary: dict, index_rows: int, index_kept: int, shard_samples: int) -> list[str]:
    """Every broken identity as a message (empty when the books balance)."""
    checks = [
        ("videos_in = videos_ok + videos_failed", summary["videos_in"], summary["videos_ok"] + summary["videos_failed"]),
        ("captions_in = captions_kept + captions_dropped", summary["captions_in"],
         summary["captions_kept"] + sum(summary["captions_dropped"].values())),
        ("index rows = captions_in", index_rows, summary["captions_in"]),
        ("kept index rows = captions_kept", index_kept, summary["captions_kept"]),
        ("shardindex nsamples = captions_kept", shard_samples, summary["captions_kept"]),
    ]
    return [f"{name}: {a} != {b}" for name, a, b in checks if a != b]


@dataclass(frozen=True)
class RunRecords:
    """Writes the run-level files once every shard and index file exists (``Finalize``)."""

    output: str
    manifest: str
    manifest_sha256: str | None
    config: dict
    config_hash: str
    started_at: float

    def __call__(self, stats, manifest_rows, shards, index_files, failures, prompt_value=(), decodes_resumed=(),
                 calibration=()) -> dict:
        counts = Counter(stats[0] if stats else {})
        failure_classes = Counter(f["error_class"] for f in failures)
        write_failures(self.output, list(failures))
        shards = sorted(shards, key=lambda s: s.url)
        videos_in = int(manifest_rows[0]) if manifest_rows else 0
        summary = {
            "videos_in": videos_in,
            "videos_ok": counts["videos_ok"],
            "videos_failed": counts["videos_failed"] + manifest_row_failures(failures),
            "captions_in": counts["captions_in"],
            "captions_kept": counts["captions_kept"],
            "captions_dropped": {k.split("/", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("dropped/")},
            "samples_written": sum(s.nsamples for s in shards),
            "shards": len(shards),
            "failures": dict(sorted(failure_classes.items())),
            "failure_ratio": 1.0 - counts["videos_ok"] / videos_in if videos_in else 0.0,
            "prompt_value_run": prompt_value[0] if prompt_value else None,
            "calibration": calibration[0].to_dict() if calibration else None,
            "resumed": {"videos": counts["videos_resumed"], "decodes": int(decodes_resumed[0]) if decodes_resumed else 0},
            "manifest": self.manifest,
            "manifest_sha256": self.manifest_sha256,
            "output": self.output,
            "config": self.config,
            "config_hash": self.config_hash,
            "versions": versions(),
        }
        problems = reconcile(summary, sum(n for _, n, _ in index_files), sum(k for _, _, k in index_files),
                             summary["samples_written"])
        finished = time.time()
        summary["timings"] = {"started_at": self.started_at, "finished_at": finished,
                              "wall_s": round(finished - self.started_at, 3)}
        summary["reconciled"] = not problems
        summary["problems"] = problems
        layout = OutputLayout(self.output)
        write_json_atomic(layout.summary, summary)
        if problems:
            raise AccountingError("summary does not reconcile: " + "; ".join(problems))
        listed = [dataclasses.replace(s, url=OutputLayout.shard_url(s.url)) for s in shards]
        write_json_atomic(layout.shardindex, shard_index(listed))
        return summary


def manifest_row_failures(failures) -> int:
    """Failures of manifest rows that never became a video (bad rows, invalid or duplicate ids):
    each is one failed manifest row."""
    return sum(1 for f in failures if f["stage"] == "manifest")
