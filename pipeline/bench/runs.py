"""A benchmark's child ``nccurate run``: its command line and the config file that gives the
child exactly the :class:`pipeline.config.Config` the benchmark measures with."""

from __future__ import annotations

import sys
from typing import Sequence

from pipeline.config import Config

#: Settings a video benchmark applies over the user's config: every caption is kept, so each
#: one's clip is cut and sharded (a fixed, worst-case workload for the clip and shard stages; a
#: random-init encoder would otherwise keep an arbitrary share).
KEEP_ALL = ("align.min_alignability=0",)


def write_run_config(config: Config, sets: Sequence[str], path: str) -> Config:
    """``config`` with the ``--set`` items ``sets`` applied (they win over it), validated and
    written to ``path`` as YAML; returns that config (what a child given ``--config path``
    runs with)."""
    import yaml

    from pipeline.config import load_config

    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config.to_dict(), handle, sort_keys=True)
    merged = load_config(path, list(sets))
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(merged.to_dict(), handle, sort_keys=True)
    return merged


def run_command(manifest: str, output: str, config_path: str, flags: Sequence[str] = ()) -> list[str]:
    """``python -m pipeline.cli run`` over ``manifest`` into ``output`` (replacing an earlier
    run's outputs there) with the config file ``config_path`` and extra ``flags`` (Beam options)."""
    return [sys.executable, "-m", "pipeline.cli", "run", "--manifest", manifest, "--output", output, "--overwrite",
            "--config", config_path, *flags]
