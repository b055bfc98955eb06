"""``python -m pipeline.cli``: the ``nccurate`` command (the benchmarks' child runs use it)."""

from pipeline.cli import main

main()
