"""Beam runner workarounds, kept in one place so each can be dropped when its runner is fixed.

Only primitives every runner executes are used. The register below names each quirk of Beam
2.77 (DESIGN §9), the workaround, and the test that pins it:

============================================  =====================================  =================================================
quirk                                         workaround                             pinned by
============================================  =====================================  =================================================
DaskRunner has no translation for             the manifest is read by a ``Create``   ``tests/e2e/test_dask_runner.py``
``beam.io.Read``                              of byte ranges and a ``FlatMap``
                                              (:func:`manifest_splits`,
                                              :func:`read_manifest_split`)
DaskRunner hands every output of a            :class:`TaggedParDo`: outputs travel   ``test_dask_runner.py`` (counts reconcile);
multi-output ``ParDo`` to each consumer       as ``(tag, value)``, one filter per    ``graph.build_graph`` splits modes with two
of any one of them                            tag (also why modes are split by two   ``Filter`` s, not ``beam.Partition``
                                              ``Filter`` s)
Elements emitted from ``finish_bundle`` are   files are written from ``process``     ``test_dask_runner.py``; ``write.py``
dropped by some runners (DaskRunner)          after a ``GroupByKey``;                (``Finalize``); ``embed.EmbedEach``
                                              ``RunInference`` without
                                              ``BatchElements`` (``EmbedEach``)
DaskRunner fuses a chain of single readers    a second reader of ``samples``         ``test_dask_runner.py`` (shardindex nsamples =
and evaluates a side input from the task's    (``write.WriteShards``); ``Finalize``  captions_kept)
own copy of the graph, duplicating elements   gathers its inputs by ``GroupByKey``,
                                              not side inputs
A Flatten of restored calibration stats       restored stats merged apart and        ``tests/e2e/test_resume.py``     (posterior)
with fresh ones never ran on DirectRunner     joined as a side input
                                              (``realign.RunCalibration``)
============================================  =====================================  =================================================
"""

from __future__ import annotations

import apache_beam as beam


class _TagOutputsFn(beam.DoFn):
    """Runs ``fn`` and emits each of its outputs as ``(tag, value)`` on the main output
    (``main`` for the untagged ones); the lifecycle methods and side inputs pass through."""

    def __init__(self, fn: beam.DoFn, main: str):
        super().__init__()
        self.fn, self.main = fn, main

    def setup(self):
        self.fn.setup()

    def start_bundle(self):
        self.fn.start_bundle()

    def process(self, element, *args, **kwargs):
        for out in self.fn.process(element, *args, **kwargs) or ():
            yield (out.tag, out.value) if isinstance(out, beam.pvalue.TaggedOutput) else (self.main, out)

    def finish_bundle(self):
        self.fn.finish_bundle()

    def teardown(self):
        self.fn.teardown()


def _only(tagged, tag: str):
    if tagged[0] == tag:
        yield tagged[1]


class _Outputs(dict):
    """``{tag: PCollection}`` whose tags are attributes too, like ``with_outputs``' result."""

    def __getattr__(self, tag: str):
        try:
            return self[tag]
        except KeyError:
            raise AttributeError(tag) from None


class TaggedParDo(beam.PTransform):
    """``beam.ParDo(fn, **side_inputs).with_outputs(*tags, main=main)``, kept apart on every
    runner: ``fn``'s outputs travel as ``(tag, value)`` and one filter per tag splits them (the
    DaskRunner does not separate tagged outputs). Returns ``{tag: PCollection}`` (``main``
    included; ``out.tag`` works too). ``fn`` must not emit from ``finish_bundle`` (some runners
    drop those elements)."""

    def __init__(self, fn: beam.DoFn, *tags: str, main: str, **side_inputs):
        super().__init__()
        self.fn, self.tags, self.main = fn, tags, main
        self.side = side_inputs  # not ``self.side_inputs``: PTransform has an attribute of that name

    def expand(self, pcoll):
        tagged = pcoll | "Run" >> beam.ParDo(_TagOutputsFn(self.fn, self.main), **self.side)
        return _Outputs({tag: tagged | f"Only_{tag}" >> beam.FlatMap(_only, tag) for tag in (self.main, *self.tags)})


#: The manifest is read in byte ranges (a ``Create`` of them): about two rows each at the least,
#: so a small manifest still spreads over the workers of a runner that partitions only what a
#: ``Create`` gives it (Dask, with ``--dask_npartitions``); at most 128, which bounds what the
#: launch puts into the pipeline graph.
MANIFEST_SPLIT_MIN_BYTES, MANIFEST_MAX_SPLITS = 256, 128


def manifest_splits(manifest: str) -> list[tuple[str, int, int]]:
    """``(path, start, end)`` byte ranges covering the manifest; a compressed one is one range
    ``(path, 0, -1)``, read whole. Runs at launch, on the machine that builds the graph."""
    from pipeline.storage import files

    if files.compression_of(manifest) is not None:
        return [(manifest, 0, -1)]
    try:
        size = files.size(manifest)
    except FileNotFoundError:
        raise FileNotFoundError(f"manifest {manifest}: no such file") from None
    n = max(1, min(MANIFEST_MAX_SPLITS, -(-size // MANIFEST_SPLIT_MIN_BYTES)))
    bounds = [size * i // n for i in range(n + 1)]
    return [(manifest, a, b) for a, b in zip(bounds, bounds[1:])]


def read_manifest_split(split: tuple[str, int, int]):
    """The lines (UTF-8, without line ends) that *start* in ``[start, end)``: every line of the
    file belongs to exactly one split. ``end == -1``: the whole (compressed) file."""
    from pipeline.storage import files

    path, start, end = split
    with files.open_read(path) as handle:
        if end < 0:
            start, end = 0, float("inf")
        elif start > 0:
            handle.seek(start - 1)
            start += len(handle.readline()) - 1  # the rest of a line that began before start
        position = start
        while position < end:
            line = handle.readline()
            if not line:
                return
            position += len(line)
            yield line.decode("utf-8").rstrip("\r\n")
