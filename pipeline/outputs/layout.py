"""Every path of an output directory (DESIGN §5), in one place.

::

    OUT/shards/shard-NNNNNN.tar         WebDataset shards of kept samples
    OUT/index/part-NNNNN.parquet        one row per input caption
    OUT/failures/part-00000.parquet     one row per failed video or caption
    OUT/summary.json                    reconciled counts, configuration, versions, timings
    OUT/shardindex.json                 wids-shard-index-v1, written last
    OUT/report/                         ``nccurate report``'s default folder
    OUT/captions/{video_id}.json        captions made from a video (subtitle track, speech recognition)
    OUT/_work/                          checkpoints of an unfinished run (``pipeline.outputs.checkpoint``)
        run.json                        the manifest and configuration they belong to
        frames/{video_id}.pts.npz, .emb-NNNNN.npy, .failure.json
        results/{video_id}.tar
        calibration/{video_id}.npz

Readers (``pipeline.tools``) and writers (``pipeline.outputs``, ``pipeline.run``) take their
paths from :class:`OutputLayout` so the layout has one owner. ``video_id`` parts are validated
``[A-Za-z0-9_-]`` (``pipeline.outputs.shards.KEY_RE``) before they reach a path here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.storage import files

SHARDS, INDEX, FAILURES, REPORT, WORK, CAPTIONS = "shards", "index", "failures", "report", "_work", "captions"
SUMMARY, SHARDINDEX = "summary.json", "shardindex.json"
RUN_FILE = "run.json"
FRAMES, RESULTS, CALIBRATION = "frames", "results", "calibration"

#: What nccurate writes into an output directory besides ``_work``; anything else there is the
#: user's. ``report`` may be replaced by a rerun or ``--overwrite``.
OWNED_DIRS, OWNED_FILES = (SHARDS, INDEX, FAILURES, REPORT), (SUMMARY, SHARDINDEX)
#: What nccurate writes that a resumed run reuses: the checkpoints and the made captions (a
#: transcription is the most expensive work of a video); removed by ``--overwrite``.
KEPT_ON_RESUME = (WORK, CAPTIONS)


def shard_name(shard_idx: int) -> str:
    """File name of shard number ``shard_idx`` (0-based): ``'shard-{idx:06d}.tar'``.

    >>> shard_name(3)
    'shard-000003.tar'
    """
    if isinstance(shard_idx, bool) or not isinstance(shard_idx, int):
        raise TypeError(f"shard_idx must be an int, got {type(shard_idx).__name__}")
    if shard_idx < 0:
        raise ValueError(f"shard_idx must be >= 0, got {shard_idx}")
    return f"shard-{shard_idx:06d}.tar"


def part_name(file_idx: int) -> str:
    """File name of index or failures part number ``file_idx``: ``'part-{idx:05d}.parquet'``.

    >>> part_name(2)
    'part-00002.parquet'
    """
    return f"part-{file_idx:05d}.parquet"


@dataclass(frozen=True)
class OutputLayout:
    """The paths of the output directory ``root`` (absolute or relative, as given)."""

    root: str

    def path(self, *parts: str) -> str:
        """``root`` joined with ``parts`` (``/`` for a URI root: :func:`pipeline.storage.files.join`)."""
        return files.join(self.root, *parts)

    # ------------------------------------------------------------------ final outputs
    @property
    def shards_dir(self) -> str:
        return self.path(SHARDS)

    def shard(self, shard_idx: int) -> str:
        return self.path(SHARDS, shard_name(shard_idx))

    @staticmethod
    def shard_url(name: str) -> str:
        """A shard's ``url`` in ``shardindex.json``: relative to the directory holding the index
        (the output root), which is how wids resolves it."""
        return f"{SHARDS}/{name}"

    @property
    def shards_glob(self) -> str:
        return self.path(SHARDS, "*.tar")

    @property
    def index_dir(self) -> str:
        return self.path(INDEX)

    def index_part(self, file_idx: int) -> str:
        return self.path(INDEX, part_name(file_idx))

    @property
    def index_glob(self) -> str:
        return self.path(INDEX, "*.parquet")

    @property
    def failures_dir(self) -> str:
        return self.path(FAILURES)

    @property
    def failures_part(self) -> str:
        """The one failures file (written even when empty, so readers always find it)."""
        return self.path(FAILURES, part_name(0))

    @property
    def failures_glob(self) -> str:
        return self.path(FAILURES, "*.parquet")

    @property
    def summary(self) -> str:
        return self.path(SUMMARY)

    @property
    def shardindex(self) -> str:
        return self.path(SHARDINDEX)

    @property
    def report_dir(self) -> str:
        return self.path(REPORT)

    def owned(self, keep_work: bool = False) -> list[str]:
        """Paths of everything nccurate writes here (:data:`KEPT_ON_RESUME` too unless ``keep_work``)."""
        return [self.path(name) for name in OWNED_DIRS + OWNED_FILES + (() if keep_work else KEPT_ON_RESUME)]

    def foreign(self) -> list[str]:
        """Sorted names of the entries of ``root`` that nccurate did not write."""
        return sorted(set(files.listdir(self.root)) - set(OWNED_DIRS) - set(OWNED_FILES) - set(KEPT_ON_RESUME))

    def made_captions(self, video_id: str) -> str:
        """``OUT/captions/{video_id}.json``: the captions made from a video (``pipeline.media.media_captions``)."""
        return self.path(CAPTIONS, f"{video_id}.json")

    # ------------------------------------------------------------------ checkpoints
    def work(self, *parts: str) -> str:
        """``OUT/_work/<parts>``."""
        return self.path(WORK, *parts)

    @property
    def work_dir(self) -> str:
        return self.work()

    @property
    def run_file(self) -> str:
        return self.work(RUN_FILE)

    @property
    def results_dir(self) -> str:
        return self.work(RESULTS)

    def result_file(self, video_id: str) -> str:
        return self.work(RESULTS, f"{video_id}.tar")

    @property
    def frames_dir(self) -> str:
        return self.work(FRAMES)

    def frames_file(self, video_id: str, suffix: str) -> str:
        """``_work/frames/{video_id}.{suffix}`` (``pts.npz``, ``emb-NNNNN.npy``, ``failure.json``)."""
        return self.work(FRAMES, f"{video_id}.{suffix}")

    def calibration_file(self, video_id: str) -> str:
        return self.work(CALIBRATION, f"{video_id}.npz")
