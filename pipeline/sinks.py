"""Output transforms. Files are written from ``process`` after a ``GroupByKey`` on the shard or
file number (never from ``finish_bundle``, which some runners drop), and ``Finalize`` runs once
with every write's result as a side input, so ``summary.json`` and then ``shardindex.json``
are written after all shards and index files exist."""

from __future__ import annotations

import math

import apache_beam as beam

from pipeline.rows import index_file_of, shard_index_of, shard_of_row


class WriteShards(beam.PTransform):
    """Kept samples -> ``OUT/shards/shard-NNNNNN.tar``; emits one ``ShardInfo`` per shard.
    ``n_shards`` (a singleton PCollection) = ceil(kept / samples_per_shard)."""

    def __init__(self, output: str, layout: str, seed: int, n_shards):
        super().__init__()
        self.output, self.layout, self.seed, self.n_shards = output, layout, seed, n_shards

    def expand(self, samples):
        from pipeline.writers import write_shard

        layout, seed, output = self.layout, self.seed, self.output

        def assign(sample, n_shards):
            video_id = sample["__key__"].rsplit("_", 1)[0]
            return shard_index_of(video_id, sample["__key__"], layout, seed, n_shards), sample

        return (samples
                | "Assign" >> beam.Map(assign, beam.pvalue.AsSingleton(self.n_shards))
                | "ByShard" >> beam.GroupByKey()
                | "Write" >> beam.MapTuple(lambda idx, group: write_shard(output, idx, list(group), layout, seed)))


class WriteIndex(beam.PTransform):
    """Index rows -> ``OUT/index/part-NNNNN.parquet``; emits ``(name, rows, kept)`` per file."""

    def __init__(self, output: str, n_files: int, layout: str, seed: int, n_shards):
        super().__init__()
        self.output, self.n_files, self.layout, self.seed, self.n_shards = output, n_files, layout, seed, n_shards

    def expand(self, rows):
        from pipeline.writers import write_index_file

        output, n_files, layout, seed = self.output, self.n_files, self.layout, self.seed

        def with_shard(row, n_shards):
            return index_file_of(row["video_id"], n_files), {**row, "shard": shard_of_row(row, layout, seed, n_shards)}

        return (rows
                | "Assign" >> beam.Map(with_shard, beam.pvalue.AsSingleton(self.n_shards))
                | "ByFile" >> beam.GroupByKey()
                | "Write" >> beam.MapTuple(lambda idx, group: write_index_file(output, idx, list(group))))


def shard_count(n_kept: int, samples_per_shard: int) -> int:
    return max(1, math.ceil(n_kept / samples_per_shard))


class Finalize(beam.PTransform):
    """Runs once: failures parquet, then ``summary.json``, then ``shardindex.json`` (last)."""

    def __init__(self, write_run_records, **side_inputs):
        super().__init__()
        self.write_run_records, self.run_inputs = write_run_records, side_inputs

    def expand(self, pbegin):
        sides = {name: beam.pvalue.AsList(pc) for name, pc in self.run_inputs.items()}
        write = self.write_run_records
        return (pbegin | "Once" >> beam.Create([None])
                | "Write" >> beam.Map(lambda _, **kw: write(**kw), **sides))
