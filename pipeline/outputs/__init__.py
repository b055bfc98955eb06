"""The files of an output directory: shards, index tables, summary, checkpoints; no Beam."""
