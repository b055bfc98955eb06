"""Output transforms. Files are written from ``process`` after a ``GroupByKey`` on the shard or
file number (never from ``finish_bundle``, which some runners drop), and ``Finalize`` runs once
after a ``GroupByKey`` of every write's result, so ``summary.json`` and then ``shardindex.json``
are written after all shards and index files exist."""

from __future__ import annotations

import math

import apache_beam as beam

from pipeline.results import index_file_of, shard_index_of, shard_of_row


class WriteShards(beam.PTransform):
    """Per-video lists of kept samples -> ``OUT/shards/shard-NNNNNN.tar``; one ``ShardInfo`` per shard.
    ``n_shards``: a singleton PCollection, the number of shard slots (:func:`shard_count`)."""

    def __init__(self, output: str, layout: str, seed: int, n_shards):
        super().__init__()
        self.output, self.layout, self.seed, self.n_shards = output, layout, seed, n_shards

    def expand(self, samples):
        from pipeline.outputs.tables import write_shard

        layout, seed, output = self.layout, self.seed, self.output

        def assign(video_samples, n_shards):
            """One video's samples -> (shard number, [samples]) per shard they fall in."""
            by_shard: dict[int, list] = {}
            for sample in video_samples:
                by_shard.setdefault(shard_index_of(sample["__key__"], layout, seed, n_shards), []).append(sample)
            return sorted(by_shard.items(), key=lambda kv: kv[0])

        def write(idx, parts):
            return write_shard(output, idx, [s for part in parts for s in part], layout, seed)

        written = (samples
                   | "Assign" >> beam.FlatMap(assign, beam.pvalue.AsSingleton(self.n_shards))
                   | "ByShard" >> beam.GroupByKey()
                   | "Write" >> beam.MapTuple(write))
        # A second reader of ``samples`` that the outputs depend on (it adds no element): Beam
        # 2.77's DaskRunner fuses a chain of single readers into one task, and evaluates a side
        # input inside the task that reads it, from the task's own copy of the graph. Fused with
        # ``samples``' producer, ``Assign`` would evaluate ``n_shards`` with that producer's
        # outputs of this task left in its (never cleared) output list: counted twice.
        second_reader = (samples | "SamplesIn" >> beam.Map(len)
                         | "CountIn" >> beam.CombineGlobally(sum).without_defaults()
                         | "NoShard" >> beam.FlatMap(lambda n: ()))
        return (written, second_reader) | "Shards" >> beam.Flatten()


class WriteIndex(beam.PTransform):
    """Per-video lists of index rows -> ``OUT/index/part-NNNNN.parquet``; ``(name, rows, kept)`` per file."""

    def __init__(self, output: str, n_files: int, layout: str, seed: int, n_shards):
        super().__init__()
        self.output, self.n_files, self.layout, self.seed, self.n_shards = output, n_files, layout, seed, n_shards

    def expand(self, rows):
        from pipeline.outputs.tables import write_index_file

        output, n_files, layout, seed = self.output, self.n_files, self.layout, self.seed

        def with_shard(video_rows, n_shards):
            """One video's rows -> (index file number, rows with their shard name)."""
            rows = [row._replace(shard=shard_of_row(row, layout, seed, n_shards)) for row in video_rows]
            return index_file_of(rows[0].video_id, n_files), rows

        def write(idx, parts):
            return write_index_file(output, idx, [r for part in parts for r in part])

        return (rows
                | "Assign" >> beam.Map(with_shard, beam.pvalue.AsSingleton(self.n_shards))
                | "ByFile" >> beam.GroupByKey()
                | "Write" >> beam.MapTuple(write))


def shard_count(n_kept: int, samples_per_shard: int, min_shards: int = 1) -> int:
    """Shard slots of a run: ``max(ceil(n_kept / samples_per_shard), min_shards, 1)``; samples
    are hashed into them (:func:`pipeline.results.shard_index_of`) and empty slots write no file."""
    return max(1, min_shards, math.ceil(n_kept / samples_per_shard))


class Finalize(beam.PTransform):
    """Runs once: failures parquet, then ``summary.json``, then ``shardindex.json`` (last).

    Every input (keyword name -> PCollection of small values) reaches the writer through one
    ``GroupByKey`` on a constant key, as ``{name: [values]}``; a ``Create`` of one marker makes
    the group exist when every input is empty. Not side inputs: Beam 2.77's DaskRunner
    recomputes a side input's whole upstream graph inside the task that reads it, once per
    side input, where output lists left over from earlier executions duplicate elements."""

    def __init__(self, write_run_records, **run_inputs):
        super().__init__()
        self.write_run_records, self.run_inputs = write_run_records, run_inputs

    def expand(self, pbegin):
        write, names = self.write_run_records, tuple(self.run_inputs)
        named = [pbegin | "Once" >> beam.Create([(None, (None, None))])]
        named += [pc | f"Name[{name}]" >> beam.Map(lambda value, name: (None, (name, value)), name)
                  for name, pc in self.run_inputs.items()]
        return (named | "Inputs" >> beam.Flatten() | "Gather" >> beam.GroupByKey()
                | "Write" >> beam.MapTuple(lambda _, pairs: write(**_lists_by_name(pairs, names))))


def _lists_by_name(pairs, names) -> dict:
    """``[(name, value), ...]`` -> ``{name: [values]}`` for every name (``None`` names skipped)."""
    lists: dict = {name: [] for name in names}
    for name, value in pairs:
        if name is not None:
            lists[name].append(value)
    return lists
