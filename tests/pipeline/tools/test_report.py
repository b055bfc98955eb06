"""``nccurate report OUT``: a static HTML folder for a feature-mode run and a small video-mode
run (random-init ``nccurate-tiny``): it parses, every link and image is a relative file that
exists, caption text is escaped (by the templates' autoescaping, in every slot), its numbers
are the index's (read here with pyarrow), a video whose input is gone gets a page that says so;
and the pure numbers behind it (``curation.report_data``)."""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import os
import re
from collections import Counter
from html.parser import HTMLParser
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from click.testing import CliRunner

from curation import report_data as rd
from pipeline.cli import main
from pipeline.synth.feature_corpus import write_corpus
from pipeline.tools.report import build_report, render
from tests import helpers
from tests.videos import NORTON_V0, make_video

EVIL = "fish & chips <script>alert(1)</script>"
ESCAPED = "fish &amp; chips &lt;script&gt;alert(1)&lt;/script&gt;"
#: Every character HTML gives a meaning to, in text and in attributes.
HOSTILE = """<script>alert('x')</script> & "quoted" <img src=x onerror=alert(1)>"""
VIDEO_RUN = (*NORTON_V0, "model.name=nccurate-tiny", "model.pretrained=null", "clips.size=48", "clips.fps=4",
             "decode_timeout_s=20", "align.min_alignability=0.0")


class _Page(HTMLParser):
    """Every tag, the ``src``/``href`` of every ``img``/``a``, every attribute value, the text of
    every ``<li>``, and every table as a list of rows of cell texts (entities decoded)."""

    def __init__(self):
        super().__init__()
        self.tags, self.links, self.values, self.tables, self.items = [], [], [], [], []
        self._cell, self._item = None, None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.values += [value for _, value in attrs]
        attrs = dict(attrs)
        if tag == "img":
            self.links.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = ""
        if tag == "li":
            self._item = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None
        if tag == "li":
            self.items.append(self._item)
            self._item = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._item is not None:
            self._item += data


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def check_report(folder: str) -> dict[str, str]:
    """Parse every page of ``folder``: no script, every link a relative path to a file there;
    returns {page name: html}."""
    from PIL import Image

    pages = {}
    for path in glob.glob(os.path.join(folder, "**", "*.html"), recursive=True):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        parser = parse(text)
        assert "html" in parser.tags and "script" not in parser.tags, path
        for link in parser.links:
            url = urlparse(link)
            assert not url.scheme and not url.netloc and not link.startswith("/"), (path, link)
            target = os.path.join(os.path.dirname(path), unquote(url.path))
            assert os.path.isfile(target), (path, link)
            if target.endswith((".png", ".jpg")):
                with Image.open(target) as image:
                    image.verify()
        assert "<script>" not in text, path
        pages[os.path.relpath(path, folder)] = text
    return pages


# ------------------------------------------------------------------------------- feature mode


@pytest.fixture(scope="module")
def feature_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_features")
    videos = helpers.small_corpus(3, 7)
    videos[0] = dataclasses.replace(videos[0], texts=(EVIL,) + tuple(videos[0].texts[1:]))
    manifest, _ = write_corpus(str(root / "in"), videos)
    return helpers.run_pipeline(manifest, str(root / "out"))


@pytest.fixture(scope="module")
def feature_report(feature_out):
    return check_report(os.path.dirname(build_report(feature_out.path)))


def test_feature_report_pages_and_links(feature_out, feature_report):
    video_ids = sorted({r["video_id"] for r in feature_out.index})
    assert set(feature_report) == {"index.html", *(f"videos/{v}.html" for v in video_ids)}
    front = feature_report["index.html"]
    for needle in (feature_out.summary["config_hash"], "posterior", "timing, learnt from the run", "alignability.png", "weight.png", "shift.png",
                   f"{feature_out.summary['captions_in']} in, {feature_out.summary['captions_kept']} kept"):
        assert needle in front
    for v in video_ids:
        assert f'href="videos/{v}.html"' in front
        page = feature_report[f"videos/{v}.html"]
        assert f'src="{v}/alignment.png" alt="similarity matrix and prompt-bucket mass' in page
        assert "No similarity picture" not in page
        assert "thumb_" not in page  # npy payloads: no thumbnails


def test_feature_report_escapes_caption_text(feature_report):
    page = feature_report["videos/synth7_000000.html"]
    assert ESCAPED in page
    assert not any(EVIL in text or "chips <" in text for text in feature_report.values())


def _index_rows(output: str) -> list[dict]:
    """The run's index read here with pyarrow alone, sorted by (video_id, caption_idx)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(os.path.join(output, "index", "*.parquet")))])
    return sorted(table.to_pylist(), key=lambda r: (r["video_id"], r["caption_idx"]))


def _span(a, b) -> str:
    return "" if a is None else f"{a:.1f}–{b:.1f}"


def _score(value) -> str:
    return "" if value is None else f"{value:.3f}"


def test_feature_report_numbers_equal_the_index(feature_out, feature_report):
    rows = _index_rows(feature_out.path)
    s = feature_out.summary
    front = parse(feature_report["index.html"])
    counts = dict(front.tables[0])
    assert counts["videos"] == f"{s['videos_in']} in, {s['videos_ok']} ok, {s['videos_failed']} failed"
    kept = sum(r["kept"] for r in rows)
    assert counts["captions"] == f"{len(rows)} in, {kept} kept, {len(rows) - kept} dropped"
    dropped = Counter(r["drop_reason"] for r in rows if not r["kept"])
    assert dropped and counts["kept"] == str(kept)
    assert {k: v for k, v in counts.items() if k.startswith("dropped: ")} == {
        f"dropped: {reason}": str(n) for reason, n in dropped.items()}
    assert counts["samples"] == f"{s['samples_written']} in {s['shards']} shard(s)" and s["samples_written"] == kept
    by_video = {v: [r for r in rows if r["video_id"] == v] for v in sorted({r["video_id"] for r in rows})}
    assert front.items == [f"{v}: {sum(r['kept'] for r in vr)} kept of {len(vr)} captions" for v, vr in by_video.items()]
    for v, video_rows in by_video.items():
        page = parse(feature_report[f"videos/{v}.html"])
        (table,) = page.tables  # no failures: the captions table only
        assert table[0][0] == "#" and table[0][-1] == "text"
        assert table[1:] == [[str(r["caption_idx"]), _span(r["asr_start"], r["asr_end"]), _span(r["start"], r["end"]),
                              _score(r["alignability"]), _score(r["bucket_mass"]), _score(r["weight"]),
                              "kept" if r["kept"] else r["drop_reason"], r["text"]] for r in video_rows]


def test_templates_escape_every_value():
    """Every slot of both templates gets text with markup, quotes and ampersands: no element or
    attribute comes out of it, and each value reads back unchanged."""
    headers = {"#", "ASR span (s)", "realigned (s)", "alignability", "bucket mass", "weight", "outcome", "text",
               "stage", "error class", "message", "count", "examples"}
    video = render("video.html", {
        "title": HOSTILE, "video_id": HOSTILE, "nav": [(HOSTILE, HOSTILE)], "kept": HOSTILE,
        "failures": [(HOSTILE, HOSTILE, HOSTILE)], "picture": {"src": HOSTILE, "alt": HOSTILE, "missing": HOSTILE},
        "clips": [{"src": HOSTILE, "caption_idx": HOSTILE, "span": HOSTILE, "weight": HOSTILE, "text": HOSTILE}],
        "captions": [(HOSTILE,) * 8]})
    front = render("index.html", {
        "title": HOSTILE, "run_path": HOSTILE, "counts": [(HOSTILE, HOSTILE)], "failures": [(HOSTILE, HOSTILE, HOSTILE)],
        "histograms": [(HOSTILE, HOSTILE)], "videos": [{"video_id": HOSTILE, "href": HOSTILE, "kept": HOSTILE,
                                                        "captions": HOSTILE}], "more": 1})
    # attribute values that carry a value: video page: nav href, picture src and alt, clip src;
    # front page: histogram src and alt, video href
    for text, n_img, n_values in ((video, 2, 4), (front, 1, 3)):
        page = parse(text)
        assert "script" not in page.tags and page.tags.count("img") == n_img
        assert "<script" not in text and "<img src=x" not in text and '"quoted"' not in text
        assert re.search(r"&(?!(amp|lt|gt|quot|#34|#39|#x27);)", text) is None  # every & starts an entity
        assert page.values.count(HOSTILE) == n_values
        cells = [cell for table in page.tables for row in table for cell in row if cell not in headers]
        assert cells and set(cells) == {HOSTILE}
    assert parse(front).items == [f"{HOSTILE}: {HOSTILE} kept of {HOSTILE} captions"]


def test_report_replaces_itself_and_refuses_other_folders(feature_out, tmp_path):
    to = tmp_path / "r"
    result = CliRunner().invoke(main, ["report", feature_out.path, "--videos", "1", "--to", str(to)])
    assert result.exit_code == 0 and result.output.strip() == f"report: {to / 'index.html'}"
    assert "2 more video(s)" in (to / "index.html").read_text()
    assert len(check_report(str(to))) == 2
    assert CliRunner().invoke(main, ["report", feature_out.path, "--to", str(to)]).exit_code == 0
    assert len(check_report(str(to))) == 4
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    result = CliRunner().invoke(main, ["report", feature_out.path, "--to", str(mine)])
    assert result.exit_code == 2 and str(mine) in result.output and (mine / "notes.txt").exists()
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "summary.json" in result.output


# --------------------------------------------------------------------------------- video mode


@pytest.fixture(scope="module")
def video_report(tmp_path_factory):
    """Two short videos run with a random-init model, every caption kept (mp4 clips); then
    ``b_fix.mp4`` is deleted and the report built."""
    root = tmp_path_factory.mktemp("report_video")
    rows = []
    for vid, duration in (("a_cook", 24.0), ("b_fix", 16.0)):
        make_video(str(root / f"{vid}.mp4"), duration, fps=8, size=(96, 64), pattern="noise")
        caps = {"start": [1.0, 6.0, 11.0], "end": [4.0, 9.0, 14.0], "text": [EVIL, "now stir", "my cousin says hi"]}
        (root / f"{vid}.json").write_text(json.dumps(caps))
        rows.append({"video_id": vid, "video": f"{vid}.mp4", "captions": f"{vid}.json"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = helpers.run_pipeline(str(manifest), str(root / "out"), VIDEO_RUN)
    os.remove(root / "b_fix.mp4")
    pages = check_report(os.path.dirname(build_report(out.path, 8, str(root / "report"))))
    return out, pages, root / "report"


def test_video_report_matrix_and_thumbnails(video_report):
    out, pages, folder = video_report
    page = pages["videos/a_cook.html"]
    assert 'src="a_cook/alignment.png" alt="similarity matrix and prompt-bucket mass' in page
    assert "unavailable" not in page
    kept = [r for r in out.rows_of("a_cook") if r["kept"]]
    assert kept and out.summary["config"]["clips"]["format"] == "mp4"
    for r in kept:
        assert f'src="a_cook/thumb_{r["caption_idx"]:05d}.jpg"' in page
    assert page.count(ESCAPED) == 2  # the thumbnail's caption and the captions table
    from PIL import Image

    with Image.open(folder / "videos" / "a_cook" / "alignment.png") as image:
        assert image.size[0] > 800  # matrix and bucket-mass panels


def test_video_report_says_when_the_input_video_is_gone(video_report):
    from PIL import Image

    _, pages, folder = video_report
    page = pages["videos/b_fix.html"]
    assert "No similarity picture: the inputs of this video are unavailable" in page and "b_fix.mp4" in page
    assert 'src="b_fix/alignment.png" alt="prompt-bucket mass of b_fix"' in page  # from the index
    assert "thumb_" in page  # from the shards
    with Image.open(folder / "videos" / "b_fix" / "alignment.png") as image:
        assert image.size[0] < 400  # the bucket-mass panel alone


def test_thumbnails_first_decodable_frame_none_for_npy_or_broken_media_or_shards(tmp_path):
    from PIL import Image

    from pipeline.outputs.shards import write_tar_shard
    from pipeline.tools.thumbnails import thumbnails

    def jpg(colour):
        buffer = io.BytesIO()
        Image.new("RGB", (16, 12), colour).save(buffer, format="JPEG")
        return buffer.getvalue()

    write_tar_shard(str(tmp_path / "s.tar"), [
        {"__key__": "v_00000", "f0000.jpg": jpg((255, 0, 0)), "f0001.jpg": jpg((0, 0, 255)), "txt": b"a"},
        {"__key__": "v_00001", "npy": b"\x93NUMPY", "txt": b"b"},
        {"__key__": "v_00002", "mp4": b"not a video", "txt": b"c"},
        {"__key__": "v_00003", "f0000.jpg": b"not a jpeg", "f0001.jpg": jpg((0, 0, 255)), "txt": b"d"},
        {"__key__": "v_00004", "f0000.jpg": jpg((0, 255, 0)), "txt": b"not asked for"},
    ])
    (tmp_path / "junk.tar").write_bytes(b"this is no tar archive" * 40)
    write_tar_shard(str(tmp_path / "whole.tar"), [{"__key__": "c_00000", "f0000.jpg": jpg((255, 0, 0)), "txt": b"e"}])
    with open(tmp_path / "whole.tar", "rb") as handle:
        (tmp_path / "cut.tar").write_bytes(handle.read()[:700])  # the first member's header and part of its data
    rows = ([{"shard": "s.tar", "key": f"v_0000{i}"} for i in range(4)] + [{"shard": "gone.tar", "key": "w_00000"}]
            + [{"shard": "junk.tar", "key": "j_00000"}, {"shard": "cut.tar", "key": "c_00000"}])
    thumbs = thumbnails(str(tmp_path), rows)
    assert sorted(thumbs) == ["v_00000", "v_00003"]
    assert thumbs["v_00000"].getpixel((8, 6))[0] > 200  # the first (red) frame
    assert thumbs["v_00003"].getpixel((8, 6))[2] > 200  # the first frame that decodes (blue)


# ------------------------------------------------------------------------------- report_data


def test_histogram_counts_every_finite_value_clipping_outliers():
    counts = rd.histogram([0.05, 0.5, None, float("nan"), 1.0, 7.0, -3.0], rd.unit_edges(10))
    assert counts.sum() == 5 and counts[0] == 2 and counts[-1] == 2


def test_symmetric_edges_are_round_and_cover_every_value():
    for values in ([66.2, -50.0], [0.3], [12.0, None], []):
        edges = rd.symmetric_edges(values, 12)
        assert len(edges) <= 13 and 0.0 in edges and np.allclose(edges, -edges[::-1])
        assert all(abs(v) <= edges[-1] for v in rd.finite_values(values))
    assert rd.symmetric_edges([66.2]).tolist() == [-80, -60, -40, -20, 0, 20, 40, 60, 80]
    assert [rd.nice_ceiling(x) for x in (11, 0.03, 2, 0)] == [20, 0.05, 2, 1]


def test_top_k_indices_best_first_ties_in_index_order():
    scores = [0.5, None, 0.9, 0.9, 0.1, float("nan")]
    assert rd.top_k_indices(scores, 1).tolist() == [2]
    assert rd.top_k_indices(scores, 3).tolist() == [2, 3, 0]
    assert rd.top_k_indices(scores, 2, largest=False).tolist() == [4, 0]
    assert rd.top_k_indices(scores, 9).tolist() == [2, 3, 0, 4] and rd.top_k_indices(scores, 0).tolist() == []


def test_shift_and_drawing_data():
    shift = rd.shift_s([10.0, 5.0, 2.0], [12.5, None, 0.0])
    assert shift[0] == 2.5 and np.isnan(shift[1]) and shift[2] == -2.0
    assert rd.matrix_extent(3, 120, 2.0) == (0.0, 60.0, 2.5, -0.5)
    boxes = rd.span_boxes([1.0, 2.0], [2.0, 4.0], [3.0, None], [4.0, None], [True, False])
    assert boxes[1].row == 1 and boxes[1].start_s is None and not boxes[1].kept and boxes[0].end_s == 4.0
    assert rd.bucket_mass_threshold(0.5) == 0.5 and [rd.middle_index(n) for n in (1, 4, 5)] == [0, 2, 2]
