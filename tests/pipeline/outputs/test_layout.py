"""``pipeline.outputs.layout``: the one owner of the output directory's paths; the writers put
their files where the layout says, and the globs find them."""

from __future__ import annotations

import glob
import os

import pytest

from pipeline.outputs.layout import OutputLayout, part_name, shard_name


def test_names_follow_design_section_5():
    assert shard_name(0) == "shard-000000.tar" and shard_name(123) == "shard-000123.tar"
    assert part_name(7) == "part-00007.parquet"
    with pytest.raises(ValueError):
        shard_name(-1)
    with pytest.raises(TypeError):
        shard_name(True)


def test_paths_are_under_the_root(tmp_path):
    layout = OutputLayout(str(tmp_path))
    assert layout.summary == os.path.join(tmp_path, "summary.json")
    assert layout.shardindex == os.path.join(tmp_path, "shardindex.json")
    assert layout.shard(2) == os.path.join(tmp_path, "shards", "shard-000002.tar")
    assert layout.index_part(1) == os.path.join(tmp_path, "index", "part-00001.parquet")
    assert layout.failures_part == os.path.join(tmp_path, "failures", "part-00000.parquet")
    assert layout.result_file("v1") == os.path.join(tmp_path, "_work", "results", "v1.tar")
    assert layout.frames_file("v1", "pts.npz") == os.path.join(tmp_path, "_work", "frames", "v1.pts.npz")
    assert layout.calibration_file("v1") == os.path.join(tmp_path, "_work", "calibration", "v1.npz")
    assert layout.run_file == os.path.join(tmp_path, "_work", "run.json")


def test_owned_and_foreign(tmp_path):
    layout = OutputLayout(str(tmp_path))
    for name in ("shards", "index", "_work", "mine"):
        (tmp_path / name).mkdir()
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("x")
    assert layout.foreign() == ["mine", "notes.txt"]
    assert layout.work_dir in layout.owned() and layout.work_dir not in layout.owned(keep_work=True)
    assert layout.summary in layout.owned(keep_work=True)


def test_writers_put_files_where_the_layout_says(tmp_path):
    from pipeline.outputs.summary import RunRecords
    from pipeline.outputs.tables import write_index_file, write_shard

    layout = OutputLayout(str(tmp_path))
    from pipeline.results import IndexRow

    row = IndexRow("v", 0, "t", 0.0, 1.0, None, None, None, None, None, None, None, 0.0, False, "unalignable",
                   None, None)
    name, n, kept = write_index_file(layout.root, 3, [row])
    assert (name, n, kept) == (part_name(3), 1, 0) and os.path.exists(layout.index_part(3))
    info = write_shard(layout.root, 1, [{"__key__": "v_00000", "txt": b"t"}], "grouped", 0)
    assert info.url == shard_name(1) and glob.glob(layout.shards_glob) == [layout.shard(1)]
    assert glob.glob(layout.index_glob) == [layout.index_part(3)]
    records = RunRecords(layout.root, "m.jsonl", None, {}, "h", 0.0)
    records([{"videos_ok": 1, "captions_in": 1, "dropped/unalignable": 1}], [1], [], [(name, n, kept)], [])
    assert os.path.exists(layout.summary) and os.path.exists(layout.shardindex)
    assert glob.glob(layout.failures_glob) == [layout.failures_part]
