"""Real-world video file shapes with a readable frame code, for checking decode and clips frame
by frame (issue 18, point 8; checked by :mod:`pipeline.bench.media`).

**The frame code.** Frame ``i`` of the upright display picture (``W x H``, what a player shows)
carries a centred square grid (side :data:`GRID_FRACTION` ``x min(W, H)``) of
:data:`GRID` ``x`` :data:`GRID` cells on a mid-grey background: the four corner cells are fixed
orientation markers (:data:`MARKERS`: red top-left, green top-right, blue bottom-left, yellow
bottom-right, so any rotation or mirror reads as such), the other 21 cells are black/white bits:
:data:`CODE_BITS` bits of the code (row-major, most significant first), then
:data:`CHECK_BITS` CRC bits (:func:`check_bits`). Cells are 1/5 of the grid, so the code survives
a resize to a 48 px model frame, 4:2:0 chroma, lossy codecs and the centre crop (the grid lies
inside the centred square). :func:`read_code` finds the grid by its bounding box (its
``aspect``, width over height, is 1 unless pixels are not square), reads the markers (the
``orientation`` seen) and the bits; a blend of two frames (grey cells) or a garbled read is
unreadable (``code`` None), never a wrong code.

**The shapes.** :data:`SHAPES` maps a name to a writer ``f(directory, scale) -> ShapeTruth``:
each writes one file and returns its truth (:class:`ShapeTruth`): the display times of the
frames in the file (seconds from the container's presentation start), the code each shows, the
display geometry and the expected outcome. :func:`write_corpus` writes them all. Files are short
(:data:`SMALL`: about 8 s, 160x90); :data:`FULL` is longer and larger (the benchmark's
``--full``). Frame content is deterministic. PyAV is imported inside functions.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

# ------------------------------------------------------------------------------------ the code

GRID = 5
GRID_FRACTION = 0.9
BACKGROUND = 128
CODE_BITS = 16
CHECK_BITS = 5
RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
#: Corner cell (row, column) -> marker colour, in the upright picture.
MARKERS = {(0, 0): RED, (0, GRID - 1): GREEN, (GRID - 1, 0): BLUE, (GRID - 1, GRID - 1): YELLOW}
#: The bit cells, row-major: code bits (most significant first), then the check bits.
BIT_CELLS = [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in MARKERS]
MAX_CODE = (1 << CODE_BITS) - 1
#: A bit cell's luma (0..255) reads 0 below this, 1 above :data:`WHITE_ABOVE`, else unreadable.
BLACK_BELOW, WHITE_ABOVE = 80, 175
#: A marker cell is the nearest marker colour when within this RGB distance, else unreadable.
MARKER_DISTANCE = 120
#: A pixel belongs to the grid when a channel differs from the background by more than this.
GRID_CONTRAST = 60


def check_bits(code: int) -> int:
    """CRC-5 (polynomial x^5 + x^2 + 1, register starting at all ones) of the
    :data:`CODE_BITS` bits of ``code``: any one or two flipped bits change it.

    >>> check_bits(0), check_bits(1), check_bits(2)
    (1, 4, 11)
    """
    reg = 0x1F
    for bit in range(CODE_BITS - 1, -1, -1):
        feedback = ((code >> bit) & 1) ^ (reg >> 4)
        reg = ((reg << 1) & 0x1F) ^ (0x05 if feedback else 0)
    return reg


def code_cells(code: int) -> np.ndarray:
    """``(GRID, GRID, 3)`` uint8: the cell colours of ``code`` (0 .. :data:`MAX_CODE`)."""
    if not 0 <= code <= MAX_CODE:
        raise ValueError(f"code {code} is outside 0..{MAX_CODE}")
    word = (code << CHECK_BITS) | check_bits(code)
    cells = np.zeros((GRID, GRID, 3), np.uint8)
    for n, (r, c) in enumerate(BIT_CELLS):
        cells[r, c] = 255 if (word >> (CODE_BITS + CHECK_BITS - 1 - n)) & 1 else 0
    for (r, c), colour in MARKERS.items():
        cells[r, c] = colour
    return cells


def grid_box(width: int, height: int) -> tuple[int, int, int]:
    """``(x0, y0, side)`` in pixels of the code grid in a ``width x height`` picture: centred,
    side :data:`GRID_FRACTION` of the shorter side."""
    side = max(GRID, round(GRID_FRACTION * min(width, height)))
    return (width - side) // 2, (height - side) // 2, side


def draw_code(code: int, width: int, height: int) -> np.ndarray:
    """``(height, width, 3)`` uint8 RGB: the upright display picture of a frame showing ``code``."""
    img = np.full((height, width, 3), BACKGROUND, np.uint8)
    x0, y0, side = grid_box(width, height)
    edges = [round(j * side / GRID) for j in range(GRID + 1)]
    cells = code_cells(code)
    for r in range(GRID):
        for c in range(GRID):
            img[y0 + edges[r]:y0 + edges[r + 1], x0 + edges[c]:x0 + edges[c + 1]] = cells[r, c]
    return img


#: What a picture shows relative to the upright one, as a function of an array whose first two
#: axes are rows and columns (a ``(GRID, GRID)`` cell array, an ``(H, W, 3)`` picture):
#: ``np.rot90`` turns counterclockwise.
ORIENTATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "upright": lambda a: a,
    "rot90": lambda a: np.rot90(a, 1),
    "rot180": lambda a: np.rot90(a, 2),
    "rot270": lambda a: np.rot90(a, 3),
    "hflip": lambda a: a[:, ::-1],
    "vflip": lambda a: a[::-1],
    "transpose": lambda a: np.swapaxes(a, 0, 1),
    "antitranspose": lambda a: np.swapaxes(np.rot90(a, 2), 0, 1),
}


@dataclass(frozen=True)
class Reading:
    """What :func:`read_code` saw in one picture.

    code: the frame code, None when unreadable (``why`` says what); orientation: the key of
    :data:`ORIENTATIONS` the markers show (None when the markers are unreadable); aspect: the
    grid's bounding box, width over height (1.0 for square pixels, 0.0 when no grid was found)."""

    code: int | None
    orientation: str | None
    aspect: float
    why: str = ""


def _grid_bounds(mask: np.ndarray) -> tuple[int, int] | None:
    """First and last index along axis 0 of ``mask`` ``(n, m)`` whose count of grid pixels is at
    least a quarter of the largest count (the top or bottom cell row holds two markers)."""
    counts = mask.sum(axis=1)
    if counts.max() == 0:
        return None
    rows = np.flatnonzero(counts >= 0.25 * counts.max())
    return int(rows[0]), int(rows[-1])


def read_code(rgb: np.ndarray) -> Reading:
    """Read the frame code of an ``(H, W, 3)`` uint8 RGB picture (a model frame, a clip frame)."""
    img = np.asarray(rgb, dtype=np.float32)
    mask = np.abs(img - BACKGROUND).max(axis=2) > GRID_CONTRAST
    rows, cols = _grid_bounds(mask), _grid_bounds(mask.T)
    if rows is None or cols is None:
        return Reading(None, None, 0.0, "no grid")
    (y0, y1), (x0, x1) = rows, cols
    h, w = y1 - y0 + 1, x1 - x0 + 1
    aspect = w / h
    if h < GRID or w < GRID:
        return Reading(None, None, aspect, "grid too small")
    cells = np.zeros((GRID, GRID, 3), np.float32)
    for r in range(GRID):
        ya, yb = y0 + int((r + 0.25) * h / GRID), y0 + int(np.ceil((r + 0.75) * h / GRID))
        for c in range(GRID):
            xa, xb = x0 + int((c + 0.25) * w / GRID), x0 + int(np.ceil((c + 0.75) * w / GRID))
            cells[r, c] = np.median(img[ya:max(yb, ya + 1), xa:max(xb, xa + 1)].reshape(-1, 3), axis=0)
    orientation = _orientation(cells)
    if orientation is None:
        return Reading(None, None, aspect, "orientation markers unreadable")
    index = ORIENTATIONS[orientation](np.arange(GRID * GRID).reshape(GRID, GRID))
    upright = np.zeros_like(cells).reshape(-1, 3)
    upright[index.ravel()] = cells.reshape(-1, 3)
    upright = upright.reshape(GRID, GRID, 3)
    word = 0
    for r, c in BIT_CELLS:
        luma = float(upright[r, c] @ np.array([0.299, 0.587, 0.114], np.float32))
        if BLACK_BELOW <= luma <= WHITE_ABOVE:
            return Reading(None, orientation, aspect, f"bit cell ({r}, {c}) is grey ({luma:.0f})")
        word = (word << 1) | int(luma > WHITE_ABOVE)
    code, check = word >> CHECK_BITS, word & ((1 << CHECK_BITS) - 1)
    if check != check_bits(code):
        return Reading(None, orientation, aspect, f"check bits wrong (read {code})")
    return Reading(code, orientation, aspect)


def _orientation(cells: np.ndarray) -> str | None:
    """The :data:`ORIENTATIONS` key whose marker layout the corner cells of ``cells`` show."""
    palette = np.array([RED, GREEN, BLUE, YELLOW], np.float32)
    corners = [(0, 0), (0, GRID - 1), (GRID - 1, 0), (GRID - 1, GRID - 1)]
    seen = []
    for r, c in corners:
        dist = np.linalg.norm(palette - cells[r, c], axis=1)
        if dist.min() > MARKER_DISTANCE:
            return None
        seen.append(int(dist.argmin()))
    layout = np.full((GRID, GRID), -1)
    for n, (r, c) in enumerate(corners):
        layout[r, c] = n
    for name, turn in ORIENTATIONS.items():
        shown = turn(layout)
        if [int(shown[r, c]) for r, c in corners] == seen:
            return name
    return None


# ---------------------------------------------------------------------------------- the shapes


@dataclass(frozen=True)
class Scale:
    """Corpus size: ``duration_s`` of video per file and a factor on the base frame sizes
    (shapes of one fixed geometry, such as the odd size or the anamorphic one, keep theirs)."""

    duration_s: float
    size_factor: int


#: The test corpus: seconds per file. 8.2 s: the end of the video lies away from the 1 and 2 Hz
#: sample boundaries, so a millisecond of container rounding never changes a frame count.
SMALL = Scale(8.2, 1)
#: The benchmark's ``--full`` corpus.
FULL = Scale(60.2, 2)


@dataclass(frozen=True)
class ShapeTruth:
    """What a player shows of one generated file.

    name: the shape; path: the file; times_s: ``(F,)`` float64 ascending, the display time (s
    from the container's presentation start) of each frame in the file; codes: ``(F,)`` int,
    the code each shows; end_s: the end of the last frame (s); display: ``(width, height)`` of
    the upright, square-pixel picture; error_class: None when the file decodes, else the
    ``InputError.error_class`` a decode must fail with (clips then fail with ``clip_failed``);
    allowed_errors: classes a decode may fail with instead of decoding (a truncated file);
    note: what the shape is."""

    name: str
    path: str
    times_s: np.ndarray
    codes: np.ndarray
    end_s: float
    display: tuple[int, int]
    error_class: str | None = None
    allowed_errors: tuple[str, ...] = ()
    note: str = ""


def _cfr_truth(name: str, path: str, n: int, rate: Fraction, display: tuple[int, int], note: str,
               start_s: float = 0.0, codes=None, **kw) -> ShapeTruth:
    times = start_s + np.arange(n) / float(rate)
    return ShapeTruth(name, path, times, np.arange(n) if codes is None else np.asarray(codes), start_s + n / float(rate),
                      display, note=note, **kw)


def _frames_for(rate: Fraction, scale: Scale) -> int:
    return round(scale.duration_s * float(rate))


def _sized(width: int, height: int, scale: Scale) -> tuple[int, int]:
    return width * scale.size_factor, height * scale.size_factor


@dataclass
class _Track:
    """One video stream to write: ``codec``, ``rate``, stored ``width x height``, ``pix_fmt``,
    encoder ``options``, and ``pictures(i) -> (height, width, 3)`` RGB of the stored frame i.
    ``pts``: the frame's presentation time in ``time_base`` units (default i frames); ``setup``:
    called with the stream before encoding (disposition, rotation, pixel aspect); ``fields``:
    ``"tff"`` flags every frame interlaced, top field first (FFmpeg's ``setfield`` filter: the
    MPEG-2 encoder takes the field order from the frames, which PyAV cannot set)."""

    codec: str
    rate: Fraction
    width: int
    height: int
    pix_fmt: str
    options: dict
    pictures: Callable[[int], np.ndarray]
    n: int
    pts: Callable[[int], int] | None = None
    time_base: Fraction | None = None
    setup: Callable | None = None
    context: dict = field(default_factory=dict)
    fields: str | None = None


def _write(target, tracks: list[_Track], fmt: str | None = None, options: dict | None = None,
           audio_s: float | None = None) -> None:
    """Mux ``tracks`` (and, with ``audio_s``, a silent mono AAC track from 0 to ``audio_s``) into
    ``target`` (a path or a writable file object; ``fmt`` the container), frames interleaved in
    time: audio is written up to each video frame's time (a muxer handed minutes of video before
    any audio writes the audio with wrong times: matroska shifts it to the video's start)."""
    import av

    with av.open(target, "w", format=fmt, options=options or {}) as container:
        audio, audio_chunks, audio_k = None, 0, 0
        if audio_s is not None:
            audio = container.add_stream("aac", rate=16000, layout="mono")
            audio_chunks = int(np.ceil(audio_s * 16000 / 1024))

        def audio_until(t_s: float) -> None:
            nonlocal audio_k
            while audio is not None and audio_k < audio_chunks and audio_k * 1024 / 16000 <= t_s:
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, audio_k * 1024
                container.mux(audio.encode(chunk))
                audio_k += 1
        streams = []
        for track in tracks:
            stream = container.add_stream(track.codec, rate=track.rate)
            stream.width, stream.height, stream.pix_fmt = track.width, track.height, track.pix_fmt
            stream.options = dict(track.options)
            if track.time_base is not None:
                stream.codec_context.time_base = track.time_base
            for key, value in track.context.items():
                setattr(stream.codec_context, key, value)
            if track.setup is not None:
                track.setup(stream)
            streams.append((stream, _field_graph(track)))
        for i in range(max(t.n for t in tracks)):
            for track, (stream, graph) in zip(tracks, streams):
                if i < track.n:
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(track.pictures(i)), format="rgb24")
                    frame.pts = track.pts(i) if track.pts else i
                    frame.time_base = track.time_base or 1 / track.rate
                    audio_until(float(frame.pts * frame.time_base))
                    if graph is not None:
                        graph.push(frame.reformat(format=track.pix_fmt))
                        frame = graph.pull()
                    container.mux(stream.encode(frame))
        if audio is not None:
            audio_until(float("inf"))
            container.mux(audio.encode(None))
        for stream, _ in streams:
            container.mux(stream.encode(None))


def _field_graph(track: _Track):
    """A filter graph that flags frames with ``track.fields`` (None when it has none)."""
    import av

    if track.fields is None:
        return None
    graph = av.filter.Graph()
    source = graph.add_buffer(width=track.width, height=track.height, format=track.pix_fmt,
                              time_base=track.time_base or 1 / track.rate)
    setfield, sink = graph.add("setfield", track.fields), graph.add("buffersink")
    source.link_to(setfield)
    setfield.link_to(sink)
    graph.configure()
    return graph


def _upright(width: int, height: int, offset: int = 0) -> Callable[[int], np.ndarray]:
    """Stored frame i = the display picture of code ``i + offset`` (no rotation, square pixels)."""
    return lambda i: draw_code(i + offset, width, height)


X264_FAST = {"preset": "veryfast", "crf": "20"}
X264_BFRAMES = {**X264_FAST, "x264-params": "bframes=3:b-pyramid=normal"}


def _simple(name: str, directory: str, scale: Scale, ext: str, codec: str, rate, size, pix_fmt: str,
            options: dict, note: str, fmt=None, mux_options=None, context=None) -> ShapeTruth:
    """A one-stream file of upright, square-pixel frames 0 .. n-1 at ``rate`` from time 0."""
    rate = Fraction(rate)
    width, height = size
    n = _frames_for(rate, scale)
    path = os.path.join(directory, f"{name}.{ext}")
    _write(path, [_Track(codec, rate, width, height, pix_fmt, options, _upright(width, height), n,
                         context=context or {})], fmt=fmt, options=mux_options)
    return _cfr_truth(name, path, n, rate, (width, height), note)


def h264_bpyramid_long_gop(directory: str, scale: Scale) -> ShapeTruth:
    rate = Fraction(25)
    keyint = 100
    options = {**X264_FAST, "x264-params": f"bframes=3:b-pyramid=normal:b-adapt=0:keyint={keyint}:min-keyint={keyint}:scenecut=0"}
    return _simple("h264_bpyramid_long_gop", directory, scale, "mp4", "libx264", rate, _sized(160, 90, scale),
                   "yuv420p", options, "H.264, 3 B-frames with pyramid, a keyframe every 4 s, mp4")


def h264_10bit(directory: str, scale: Scale) -> ShapeTruth:
    return _simple("h264_10bit", directory, scale, "mp4", "libx264", 24, _sized(160, 90, scale), "yuv420p10le",
                   X264_BFRAMES, "H.264 High 10 (yuv420p10le), mp4")


def hevc_open_gop(directory: str, scale: Scale) -> ShapeTruth:
    options = {"preset": "ultrafast", "crf": "20",
               "x265-params": "open-gop=1:keyint=48:min-keyint=48:bframes=4:scenecut=0:log-level=error"}
    return _simple("hevc_open_gop", directory, scale, "mp4", "libx265", 30, _sized(160, 90, scale), "yuv420p",
                   options, "HEVC, open GOP (CRA keyframes with leading pictures), 4 B-frames, mp4")


VP9 = {"deadline": "good", "cpu-used": "8", "crf": "20", "b": "0", "auto-alt-ref": "1", "lag-in-frames": "12",
       "row-mt": "0", "g": "60"}


def vp9_webm(directory: str, scale: Scale) -> ShapeTruth:
    return _simple("vp9_webm", directory, scale, "webm", "libvpx-vp9", 30, _sized(160, 90, scale), "yuv420p", VP9,
                   "VP9 with alt-ref (hidden) frames, webm with cues")


class _Unseekable:
    """A write-only file object without ``seek``: FFmpeg's matroska muxer then writes no cues
    (and no duration), as a live recorder or a streamed download leaves a webm."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data) -> int:
        return self.handle.write(data)


def vp9_webm_no_cues(directory: str, scale: Scale) -> ShapeTruth:
    rate, (width, height) = Fraction(30), _sized(160, 90, scale)
    n = _frames_for(rate, scale)
    path = os.path.join(directory, "vp9_webm_no_cues.webm")
    with open(path, "wb") as handle:
        _write(_Unseekable(handle), [_Track("libvpx-vp9", rate, width, height, "yuv420p", VP9, _upright(width, height), n)],
               fmt="webm")
    return _cfr_truth("vp9_webm_no_cues", path, n, rate, (width, height),
                      "VP9 webm written unseekably: no cues, no duration in the header")


def av1_svt(directory: str, scale: Scale) -> ShapeTruth:
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner of 20 info lines per encoder; errors only
    return _simple("av1_svt", directory, scale, "mp4", "libsvtav1", 24, _sized(160, 96, scale), "yuv420p",
                   {"preset": "8", "crf": "30"},
                   "AV1 (libsvtav1 preset 8: presets 10+ leave half-copied blocks in a few frames), mp4")


def prores_mov(directory: str, scale: Scale) -> ShapeTruth:
    return _simple("prores_mov", directory, scale, "mov", "prores_ks", 25, _sized(160, 90, scale), "yuv422p10le",
                   {"profile": "2"}, "ProRes 422 (prores_ks, yuv422p10le), mov")


def mjpeg_avi(directory: str, scale: Scale) -> ShapeTruth:
    return _simple("mjpeg_avi", directory, scale, "avi", "mjpeg", 15, _sized(160, 90, scale), "yuvj420p",
                   {"q:v": "3"}, "Motion JPEG at 15 fps, avi (a webcam's)", context={"qmin": 2, "qmax": 4})


#: Frame durations (ms) of the VFR shape, cycled: a phone's irregular capture.
VFR_DURATIONS_MS = (33, 50, 17, 100, 40, 33, 67, 25)


def vfr_mp4(directory: str, scale: Scale) -> ShapeTruth:
    width, height = _sized(160, 90, scale)
    durations = []
    while sum(durations) < scale.duration_s * 1000:
        durations.append(VFR_DURATIONS_MS[len(durations) % len(VFR_DURATIONS_MS)])
    starts = np.concatenate([[0], np.cumsum(durations)[:-1]]).astype(int)
    path = os.path.join(directory, "vfr_mp4.mp4")
    _write(path, [_Track("libx264", Fraction(30), width, height, "yuv420p", X264_BFRAMES, _upright(width, height),
                         len(durations), pts=lambda i: int(starts[i]), time_base=Fraction(1, 1000))])
    # the muxer stores the last frame's duration as one nominal period (1/30 s)
    end_s = starts[-1] / 1000 + 1 / 30
    return ShapeTruth("vfr_mp4", path, starts / 1000.0, np.arange(len(durations)), end_s, (width, height),
                      note=f"variable frame rate: durations cycling {list(VFR_DURATIONS_MS)} ms, mp4")


def nonzero_start_pts(directory: str, scale: Scale) -> ShapeTruth:
    """The only stream starts at 10 s: the container starts there too, so frame 0 is at 0."""
    rate, (width, height) = Fraction(25), _sized(160, 90, scale)
    n = _frames_for(rate, scale)
    path = os.path.join(directory, "nonzero_start_pts.mp4")
    _write(path, [_Track("libx264", rate, width, height, "yuv420p", X264_BFRAMES, _upright(width, height), n,
                         pts=lambda i: 250 + i)])
    return _cfr_truth("nonzero_start_pts", path, n, rate, (width, height),
                      "the video (the only stream) starts at PTS 10 s, mp4: time 0 is its first frame")


def odd_size(directory: str, scale: Scale) -> ShapeTruth:
    return _simple("odd_size", directory, scale, "webm", "libvpx-vp9", 25, (161, 97), "yuv420p", VP9,
                   "161x97 (odd, 4:2:0: x264 refuses odd 4:2:0 sizes, VP9 takes them), webm")


def fragmented_mp4(directory: str, scale: Scale) -> ShapeTruth:
    return _simple("fragmented_mp4", directory, scale, "mp4", "libx264", 25, _sized(160, 90, scale), "yuv420p",
                   {**X264_FAST, "x264-params": "bframes=3:keyint=50"}, "fragmented mp4 (empty moov, a moof per keyframe)",
                   mux_options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})


def h264_mkv(directory: str, scale: Scale) -> ShapeTruth:
    return _simple("h264_mkv", directory, scale, "mkv", "libx264", Fraction(30000, 1001), _sized(160, 90, scale),
                   "yuv420p", X264_BFRAMES, "H.264 with B-frames at 29.97 fps, mkv (millisecond timestamps)")


def truncated_mp4(directory: str, scale: Scale) -> ShapeTruth:
    """A faststart mp4 (index first) cut in the middle of a packet about 60% into its media
    data: the frames whose packets are whole, a prefix in decode order, survive."""
    import av

    rate, (width, height) = Fraction(25), _sized(160, 90, scale)
    n = _frames_for(rate, scale)
    full = os.path.join(directory, "truncated_mp4.full.mp4")
    from pipeline.media.clips import with_portable_asm

    # the same bytes on every machine (one thread, portable SIMD), so the cut lands in the same packet
    options = with_portable_asm({**X264_FAST, "x264-params": "bframes=3:keyint=50"})
    _write(full, [_Track("libx264", rate, width, height, "yuv420p", options, _upright(width, height), n,
                         context={"thread_count": 1})], options={"movflags": "+faststart"})
    with av.open(full) as container:
        stream = container.streams.video[0]
        packets = [(p.pos, p.size, p.pts) for p in container.demux(stream) if p.size]
        tb = stream.time_base
        first_pts = min(p[2] for p in packets)
    media_start = min(p[0] for p in packets)
    media_end = max(p[0] + p[1] for p in packets)
    cut_at = media_start + 0.6 * (media_end - media_start)
    cut_packet = next(k for k, (pos, size, _) in enumerate(packets) if pos <= cut_at < pos + size and size >= 2)
    cut = packets[cut_packet][0] + packets[cut_packet][1] // 2
    whole = sorted(round(float((p[2] - first_pts) * tb) * float(rate)) for p in packets[:cut_packet])
    path = os.path.join(directory, "truncated_mp4.mp4")
    full_size = os.path.getsize(full)
    with open(full, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read(cut))
    os.remove(full)
    idx = np.array(whole)
    return ShapeTruth("truncated_mp4", path, idx / float(rate), idx, (idx[-1] + 1) / float(rate), (width, height),
                      allowed_errors=("decode_error",),
                      note=f"faststart mp4 cut mid-packet at byte {cut} of {full_size}: "
                           f"{len(idx)} of {n} frames whole")


def _mp4_boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """``(type, offset of the payload, end)`` of the ISO-BMFF boxes in ``data[start:end]``."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        head = 8
        if size == 1:
            size, head = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        yield kind, pos + head, pos + size
        pos += size


def _scale_mp4_durations(data: bytearray, factor: float) -> None:
    """Multiply the duration fields of ``mvhd``, every ``tkhd``, ``mdhd`` and the first edit of
    each ``elst`` (version 0 boxes; FFmpeg takes a track's length from its edit list) by
    ``factor`` in place: the header lies; the sample tables (the real times) are untouched."""
    offsets = {b"mvhd": 16, b"tkhd": 20, b"mdhd": 16, b"elst": 8}  # from the payload: version/flags, ...

    def scale(at: int) -> None:
        (value,) = struct.unpack(">I", data[at:at + 4])
        data[at:at + 4] = struct.pack(">I", min(0xFFFFFFFE, max(1, int(value * factor))))

    def walk(start: int, end: int) -> None:
        for kind, payload, box_end in _mp4_boxes(bytes(data), start, end):
            if kind in (b"moov", b"trak", b"mdia", b"edts"):
                walk(payload, box_end)
            elif kind in offsets and data[payload] == 0:
                scale(payload + offsets[kind])

    walk(0, len(data))


def lying_duration_mp4(directory: str, scale: Scale) -> ShapeTruth:
    """An mp4 whose header durations say 10x the truth (FFmpeg times an mp4 by its sample tables)."""
    truth = _simple("lying_duration_mp4", directory, scale, "mp4", "libx264", 25, _sized(160, 90, scale), "yuv420p",
                    X264_BFRAMES, "mp4 whose mvhd/tkhd/mdhd/elst durations say 10x the real length")
    with open(truth.path, "rb") as handle:
        data = bytearray(handle.read())
    _scale_mp4_durations(data, 10.0)
    with open(truth.path, "wb") as handle:
        handle.write(data)
    return truth


def _scale_mkv_duration(path: str, factor: float) -> None:
    """Multiply a matroska file's Segment Duration (EBML 0x4489, an 8-byte float) by ``factor``
    in place (FFmpeg reports it as the container's duration)."""
    with open(path, "rb") as handle:
        data = bytearray(handle.read())
    at = data.find(b"\x44\x89\x88")
    if at < 0:
        raise RuntimeError(f"no 8-byte Duration element in {path}")
    (value,) = struct.unpack(">d", data[at + 3:at + 11])
    data[at + 3:at + 11] = struct.pack(">d", value * factor)
    with open(path, "wb") as handle:
        handle.write(data)


def lying_duration_long(directory: str, scale: Scale) -> ShapeTruth:
    truth = _simple("lying_duration_long", directory, scale, "mkv", "libx264", 25, _sized(160, 90, scale), "yuv420p",
                    X264_BFRAMES, "mkv whose segment duration says 10x the real length")
    _scale_mkv_duration(truth.path, 10.0)
    return truth


def lying_duration_short(directory: str, scale: Scale) -> ShapeTruth:
    truth = _simple("lying_duration_short", directory, scale, "mkv", "libx264", 25, _sized(160, 90, scale), "yuv420p",
                    X264_BFRAMES, "mkv whose segment duration says a quarter of the real length")
    _scale_mkv_duration(truth.path, 0.25)
    return truth


def mpegts_h264(directory: str, scale: Scale) -> ShapeTruth:
    return _simple("mpegts_h264", directory, scale, "ts", "libx264", Fraction(30000, 1001), _sized(160, 90, scale),
                   "yuv420p", X264_BFRAMES, "MPEG-TS, H.264 with B-frames at 29.97 fps (PTS from 1.4 s)")


def avi_mpeg4(directory: str, scale: Scale) -> ShapeTruth:
    return _simple("avi_mpeg4", directory, scale, "avi", "mpeg4", 25, _sized(160, 90, scale), "yuv420p",
                   {"q:v": "2"}, "MPEG-4 Part 2 with 2 B-frames, avi (no presentation timestamps)",
                   context={"max_b_frames": 2, "qmin": 2, "qmax": 4})


def _rotated(rotation: int, hflip: bool = False):
    def writer(directory: str, scale: Scale) -> ShapeTruth:
        name = "hflip_display_matrix" if hflip else f"rotated_{rotation % 360}"
        rate = Fraction(30)
        landscape = _sized(160, 90, scale)
        display = landscape[::-1] if rotation % 180 else landscape
        n = _frames_for(rate, scale)
        turns = rotation // 90

        def stored(i: int) -> np.ndarray:
            picture = draw_code(i, *display)
            return picture[:, ::-1] if hflip else np.rot90(picture, -turns)

        width, height = (display[1], display[0]) if rotation % 180 else display
        path = os.path.join(directory, f"{name}.mp4")
        _write(path, [_Track("libx264", rate, width, height, "yuv420p", X264_BFRAMES, stored, n,
                             setup=lambda s: s.set_display_rotation(rotation, hflip=hflip))])
        what = ("a display matrix that mirrors left-right (stored mirrored)" if hflip else
                f"display matrix {rotation} deg (stored {width}x{height}, turned the other way), mp4")
        return _cfr_truth(name, path, n, rate, display, what)

    return writer


def two_video_streams(directory: str, scale: Scale) -> ShapeTruth:
    """Stream 0 (no default disposition) shows codes 30000 + i at 128x72; stream 1 (default) codes i."""
    from av.stream import Disposition

    rate, (width, height) = Fraction(25), _sized(160, 90, scale)
    n = _frames_for(rate, scale)
    other = _sized(128, 72, scale)
    path = os.path.join(directory, "two_video_streams.mkv")

    def disposition(flag):
        def setup(stream):
            stream.disposition = flag
        return setup

    _write(path, [
        _Track("libx264", rate, *other, "yuv420p", X264_FAST, _upright(*other, offset=30000), n,
               setup=disposition(Disposition(0))),
        _Track("libx264", rate, width, height, "yuv420p", X264_FAST, _upright(width, height), n,
               setup=disposition(Disposition.default))])
    return _cfr_truth("two_video_streams", path, n, rate, (width, height),
                      "mkv, two video streams: the second has the default disposition (the other shows 30000 + i)")


def audio_cover_art(directory: str, scale: Scale) -> ShapeTruth:
    """An m4a: AAC audio and an attached-picture MJPEG (cover art): no video to decode."""
    import av
    from av.stream import Disposition

    path = os.path.join(directory, "audio_cover_art.m4a")
    with av.open(path, "w", format="mp4") as container:
        audio = container.add_stream("aac", rate=16000, layout="mono")
        cover = container.add_stream("mjpeg")
        cover.width = cover.height = 96
        cover.pix_fmt, cover.disposition = "yuvj420p", Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(draw_code(0, 96, 96), format="rgb24").reformat(format="yuvj420p")
        picture.pts = 0
        for packet in [*cover.encode(picture), *cover.encode(None)]:
            container.mux(packet)
        for k in range(int(scale.duration_s * 16000 / 1024)):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 16000, k * 1024
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
    return ShapeTruth("audio_cover_art", path, np.zeros(0), np.zeros(0, int), 0.0, (96, 96), error_class="decode_error",
                      note="m4a: AAC + cover art (attached picture): no video stream")


def anamorphic(directory: str, scale: Scale) -> ShapeTruth:
    """Stored 480x360 with sample aspect 4:3: a player shows 640x360."""
    from PIL import Image

    rate, display, stored_size = Fraction(25), (640, 360), (480, 360)
    n = _frames_for(rate, scale)

    def stored(i: int) -> np.ndarray:
        return np.asarray(Image.fromarray(draw_code(i, *display)).resize(stored_size, Image.BILINEAR))

    def setup(stream):
        stream.codec_context.sample_aspect_ratio = Fraction(4, 3)

    path = os.path.join(directory, "anamorphic.mp4")
    _write(path, [_Track("libx264", rate, *stored_size, "yuv420p", X264_BFRAMES, stored, n, setup=setup)])
    return _cfr_truth("anamorphic", path, n, rate, display, "stored 480x360, sample aspect 4:3 (displays 640x360), mp4")


def _interlaced_picture(width: int, height: int) -> Callable[[int], np.ndarray]:
    """Frame i: the top field (even rows) shows code 2i, the bottom field (odd rows) 2i + 1."""
    def picture(i: int) -> np.ndarray:
        out = draw_code(2 * i, width, height)
        out[1::2] = draw_code(2 * i + 1, width, height)[1::2]
        return out
    return picture


def interlaced_h264(directory: str, scale: Scale) -> ShapeTruth:
    rate, (width, height) = Fraction(25), _sized(160, 96, scale)
    n = _frames_for(rate, scale)
    path = os.path.join(directory, "interlaced_h264.mp4")
    _write(path, [_Track("libx264", rate, width, height, "yuv420p",
                         {"preset": "veryfast", "crf": "16", "x264-params": "interlaced=1:tff=1:bframes=2"},
                         _interlaced_picture(width, height), n)])
    return _cfr_truth("interlaced_h264", path, n, rate, (width, height),
                      "H.264 MBAFF, top field first (top field code 2i, bottom 2i + 1), mp4: frame i shows 2i",
                      codes=2 * np.arange(n))


def interlaced_mpeg2(directory: str, scale: Scale) -> ShapeTruth:
    rate, (width, height) = Fraction(25), _sized(160, 96, scale)
    n = _frames_for(rate, scale)
    path = os.path.join(directory, "interlaced_mpeg2.ts")

    def setup(stream):
        import av

        stream.codec_context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me

    _write(path, [_Track("mpeg2video", rate, width, height, "yuv420p", {}, _interlaced_picture(width, height), n,
                         setup=setup, context={"qmin": 1, "qmax": 3, "max_b_frames": 2, "bit_rate": 4_000_000},
                         fields="tff")])
    return _cfr_truth("interlaced_mpeg2", path, n, rate, (width, height),
                      "MPEG-2, interlaced top field first, MPEG-TS: frame i shows 2i", codes=2 * np.arange(n))


#: The late-start shapes' video delay (s): audio from 0, the first video frame at this time.
LATE_START_S = 1.5


def _late_start(ext: str):
    def writer(directory: str, scale: Scale) -> ShapeTruth:
        rate, (width, height) = Fraction(24), _sized(160, 90, scale)
        n = _frames_for(rate, scale)
        delay = round(LATE_START_S * float(rate))
        name = f"late_start_{ext}"
        path = os.path.join(directory, f"{name}.{ext}")
        _write(path, [_Track("libx264", rate, width, height, "yuv420p", X264_BFRAMES, _upright(width, height), n,
                             pts=lambda i: delay + i)], audio_s=LATE_START_S + n / float(rate))
        return _cfr_truth(name, path, n, rate, (width, height),
                          f"audio from 0, video from {LATE_START_S} s, {ext}", start_s=delay / float(rate))
    return writer


#: Every shape: name -> writer ``(directory, scale) -> ShapeTruth``.
SHAPES: dict[str, Callable[[str, Scale], ShapeTruth]] = {
    "h264_bpyramid_long_gop": h264_bpyramid_long_gop,
    "h264_10bit": h264_10bit,
    "hevc_open_gop": hevc_open_gop,
    "vp9_webm": vp9_webm,
    "vp9_webm_no_cues": vp9_webm_no_cues,
    "av1_svt": av1_svt,
    "prores_mov": prores_mov,
    "mjpeg_avi": mjpeg_avi,
    "vfr_mp4": vfr_mp4,
    "nonzero_start_pts": nonzero_start_pts,
    "odd_size": odd_size,
    "fragmented_mp4": fragmented_mp4,
    "h264_mkv": h264_mkv,
    "truncated_mp4": truncated_mp4,
    "lying_duration_mp4": lying_duration_mp4,
    "lying_duration_long": lying_duration_long,
    "lying_duration_short": lying_duration_short,
    "mpegts_h264": mpegts_h264,
    "avi_mpeg4": avi_mpeg4,
    "rotated_90": _rotated(90),
    "rotated_270": _rotated(-90),
    "rotated_180": _rotated(180),
    "hflip_display_matrix": _rotated(0, hflip=True),
    "two_video_streams": two_video_streams,
    "audio_cover_art": audio_cover_art,
    "anamorphic": anamorphic,
    "interlaced_h264": interlaced_h264,
    "interlaced_mpeg2": interlaced_mpeg2,
    "late_start_mp4": _late_start("mp4"),
    "late_start_mkv": _late_start("mkv"),
}


def write_shape(name: str, directory: str, scale: Scale = SMALL) -> ShapeTruth:
    """Write shape ``name`` (a key of :data:`SHAPES`) under ``directory``; its truth."""
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; known: {sorted(SHAPES)}")
    os.makedirs(directory, exist_ok=True)
    return SHAPES[name](directory, scale)


def write_corpus(directory: str, scale: Scale = SMALL, names=None) -> list[ShapeTruth]:
    """Write the shapes ``names`` (default: all of :data:`SHAPES`) under ``directory``."""
    return [write_shape(name, directory, scale) for name in (names or SHAPES)]
