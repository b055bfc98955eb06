"""The PyAV decode backend: a keyframe-aware fast path and a sequential pass that pick the same
frames (the rules of :mod:`curation.frames`).

* :func:`index_packets` demuxes the stream without decoding into a :class:`PacketIndex`.
* :func:`plan_indexed_decode` turns the index and the sample rate into a :class:`DecodePlan`
  (which frame each sample uses, how many picked frames each group of pictures holds): pure, no
  file.
* :func:`decode_indexed` executes a plan: it demuxes again and sends to the decoder only the
  packets a picked frame can depend on; :func:`decode_sequential` decodes every frame and picks
  with a :class:`~curation.frames.NearestPicker`. :func:`decode_pyav` tries the first and falls
  back to the second.

Each path writes ``(n, size, size, 3)`` uint8 frames to a sink (``add``/``keep_first``, see
:class:`pipeline.media.decode.FrameSink`) and returns ``(pts_s, duration_s)``. PyAV is imported
inside functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from curation.frames import NearestPicker, center_crop, nearest_indices, resize_dims, sample_times_s
from pipeline.media.failures import decode_error


def picture_streams(container) -> list:
    """The container's video streams that are moving pictures: attached pictures (cover art of
    an audio file, thumbnails) are left out."""
    from av.stream import Disposition

    return [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]


def choose_video_stream(container):
    """The one video stream every path decodes (model frames, clips, both backends): the first
    with the default disposition among :func:`picture_streams`, else the first of them; None
    when there is none."""
    from av.stream import Disposition

    streams = picture_streams(container)
    default = [s for s in streams if s.disposition & Disposition.default]
    return (default or streams or [None])[0]


def open_video_stream(path: str, threads: int = 0):
    """``(container, stream)`` of :func:`choose_video_stream`, opened with PyAV (decode_error
    else, "no video stream" for a file whose only picture is attached cover art); the decoder
    uses ``threads`` threads (0: FFmpeg's choice, one per core)."""
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise decode_error(path, "cannot open", exc) from None
    stream = choose_video_stream(container)
    if stream is None:
        container.close()
        raise decode_error(path, "no video stream" + (" (only an attached picture)" if container.streams.video else ""))
    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = int(threads)
    return container, stream


def packets(container, stream):
    """``stream``'s packets in decode order, without those the demuxer flags corrupt (a packet
    cut by truncation, damaged data): they are never sent to the decoder, whose frame threads
    would otherwise end the decode early without an error and lose the whole frames after them."""
    return (packet for packet in container.demux(stream) if not packet.is_corrupt)


def decoded_frames(container, stream, ends: list | None = None):
    """The frames of ``stream`` in presentation order, decoded packet by packet from :func:`packets`
    (the final empty packet flushes the decoder). ``ends``: a one-item list that receives the
    largest packet end demuxed so far (PTS + duration, in ticks), the stream's end even where
    the decoder drops frames."""
    for packet in packets(container, stream):
        if ends is not None and packet.pts is not None:
            ends[0] = max(ends[0], packet.pts + (packet.duration or 0))
        yield from packet.decode()


def video_dims(path: str) -> tuple[int, int]:
    """``(width, height)`` of the chosen video stream (:func:`choose_video_stream`), from the header."""
    container, stream = open_video_stream(path)
    with container:
        return stream.codec_context.width, stream.codec_context.height


#: Containers without presentation timestamps (AVI stores one frame per slot at a fixed rate;
#: with B-frames FFmpeg's guessed PTS come out shuffled): frame ``i`` of the decoder's output,
#: which is in presentation order, is at ``i / rate``.
COUNTED_FORMATS = ("avi",)


def times_by_count(stream) -> bool:
    """Whether ``stream``'s frame times are counted (:data:`COUNTED_FORMATS`), not read from PTS;
    such a stream is decoded from its start, never after a seek."""
    return bool(set(stream.container.format.name.split(",")) & set(COUNTED_FORMATS))


def origin_ticks(stream) -> int | float | None:
    """Time 0 of the timeline in ``stream``'s ticks: the earliest start of the file's audio
    streams and ``stream`` (a video stream that starts late is placed at its delay, as a player
    and the captions place it; cover art, subtitle and data streams do not count). An int when
    exact (always where ``stream`` starts first), else a float; 0 without a time base; None when no
    stream has a start time (then the first frame is time 0)."""
    if not stream.time_base:
        return 0
    starts = [Fraction(s.start_time) * s.time_base for s in (stream, *stream.container.streams.audio)
              if s.start_time is not None and s.time_base]
    if not starts:
        return None
    ticks = min(starts) / stream.time_base
    return int(ticks) if ticks.denominator == 1 else float(ticks)


def timeline_zero(container) -> Fraction:
    """Time 0 of the file's timeline (:func:`origin_ticks` of its chosen video stream), exactly, in
    seconds of the container's clock, for the streams that are not the video (audio for speech
    recognition, subtitle tracks): an event at ``t`` seconds of a stream's own clock is at
    ``t - timeline_zero`` on the timeline. A file without a video stream, or whose streams have no
    start time: the earliest audio start, else 0."""
    stream = choose_video_stream(container)
    if stream is not None:
        origin = origin_ticks(stream)
        if origin is not None and stream.time_base:
            return Fraction(origin) * stream.time_base
    starts = [Fraction(s.start_time) * s.time_base for s in container.streams.audio
              if s.start_time is not None and s.time_base]
    return min(starts) if starts else Fraction(0)


def timeline_zero_s(container) -> float:
    """:func:`timeline_zero` as a float."""
    return float(timeline_zero(container))


def declared_end_s(path: str) -> float | None:
    """The end of the chosen video stream on the timeline as the file's header declares it (the
    stream's duration, else the container's), in seconds; None when the header has none."""
    container, stream = open_video_stream(path)
    with container:
        origin = origin_ticks(stream)
        if stream.duration and stream.time_base and stream.start_time is not None and origin is not None:
            return float((stream.start_time - origin + stream.duration) * stream.time_base)
        if container.duration:
            zero_s = float(origin * stream.time_base) if origin is not None and stream.time_base else 0.0
            return (container.duration + (container.start_time or 0)) / 1e6 - zero_s
    return None


def frame_times(stream, frames):
    """``(t_s, end_s, frame)`` for each decoded frame: its PTS on the timeline (seconds after
    :func:`origin_ticks`) and its end (PTS + its duration, else one frame period); counted at the
    frame rate from the stream's start for a container without presentation timestamps
    (:func:`times_by_count`). Raises ``InputError('decode_error')`` when a time goes backwards
    (the nearest-frame picks would be silently wrong)."""
    counted = times_by_count(stream)
    tb = float(stream.time_base) if stream.time_base and not counted else None
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    period = 1.0 / float(rate) if rate else 0.0
    origin = origin_ticks(stream) if tb is not None else None
    last_s = -math.inf
    for i, frame in enumerate(frames):
        if frame.pts is None or tb is None:
            t_s = i * period
        else:
            if origin is None:
                origin = frame.pts
            t_s = (frame.pts - origin) * tb
        if t_s < last_s:  # the decoder outputs in presentation order: these times are wrong, picks would be too
            raise decode_error(stream.container.name, f"frame times go backwards at frame {i} "
                                                      f"({t_s:.3f} s after {last_s:.3f} s)")
        last_s = t_s
        dur = frame.duration * tb if frame.duration and tb else period
        yield t_s, t_s + dur, frame


def orientation(frame) -> tuple[int, bool]:
    """``(turns, mirror)`` that show ``frame`` upright: ``turns`` counterclockwise quarter turns
    (0..3), then a left-right mirror when ``mirror``. From the frame's display matrix, by the rule
    FFmpeg's own player and CLI autorotate with (fftools: the angle to the nearest quarter turn,
    flips from the signs of the matrix' entries); (0, False) without a matrix."""
    import struct

    from av.sidedata.sidedata import Type

    side = frame.side_data.get(Type.DISPLAYMATRIX) if frame.side_data else None
    if side is None or len(bytes(side)) < 36:
        return 0, False
    m = struct.unpack("<9i", bytes(side)[:36])
    a, b, c, d = m[0] / 65536, m[1] / 65536, m[3] / 65536, m[4] / 65536
    if not (math.hypot(a, c) and math.hypot(b, d)):
        return 0, False
    ccw = -math.degrees(math.atan2(b / math.hypot(b, d), a / math.hypot(a, c)))  # av_display_rotation_get
    theta = round(-ccw) % 360
    quarter = round(theta / 90) % 4  # clockwise quarter turns, as fftools reads the angle
    if quarter == 1:
        return 3, m[3] > 0  # transpose=cclock_flip, else clock
    if quarter == 2:
        mirror_h, mirror_v = m[0] < 0, m[4] < 0  # hflip, vflip
        return (2 if mirror_v else 0), mirror_h != mirror_v
    if quarter == 3:
        return 1, m[3] < 0  # transpose=clock_flip, else cclock
    return (2, True) if m[4] < 0 else (0, False)  # vflip


def pixel_aspect(stream) -> float:
    """The stream's sample (pixel) aspect ratio, width over height of one pixel; 1.0 when unset."""
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return float(sar) if sar and float(sar) > 0 else 1.0


def display_dims(frame, aspect: float = 1.0) -> tuple[int, int]:
    """``(width, height)`` of ``frame`` as a player shows it: the width scaled by the pixel
    ``aspect`` (:func:`pixel_aspect`, so pixels come out square), then swapped by a quarter turn
    (:func:`orientation`)."""
    width = max(1, round(frame.width * aspect))
    return (frame.height, width) if orientation(frame)[0] % 2 else (width, frame.height)


def to_rgb(frame, width: int, height: int, picture=None) -> np.ndarray:
    """PyAV frame -> ``(height, width, 3)`` uint8 RGB, upright (its display matrix applied,
    :func:`orientation`; ``width``/``height`` are the upright picture's), one swscale step,
    bilinear. ``picture``: the frame's pixels to convert when they are not the frame's own (one
    field, :class:`Display`)."""
    from av.video.reformatter import Interpolation

    turns, mirror = orientation(frame)
    stored_w, stored_h = (height, width) if turns % 2 else (width, height)
    rgb = (picture or frame).reformat(width=stored_w, height=stored_h, format="rgb24",
                                      interpolation=Interpolation.BILINEAR).to_ndarray()
    if turns:
        rgb = np.rot90(rgb, turns)
    if mirror:
        rgb = rgb[:, ::-1]
    return np.ascontiguousarray(rgb)  # no copy when neither applied


#: ``codec_context.field_order`` values whose first displayed field is the bottom one (FFmpeg's
#: ``AV_FIELD_BB`` and ``AV_FIELD_TB``); an interlaced frame of any other order shows its top field first.
BOTTOM_FIELD_FIRST = (3, 4)


class Display:
    """How the frames of one stream are shown, for the encoder's crops and for clips: square
    pixels (the stream's :func:`pixel_aspect`), upright (each frame's display matrix) and, with
    ``deinterlace``, one picture per interlaced frame: a frame the decoder flags as interlaced is
    replaced by the field shown first (the stream's field order; top when unknown), every other line
    of each plane as FFmpeg's ``field`` filter takes it, which the RGB conversion scales to the full
    height. No temporal filter: each frame is deinterlaced on its own (so skipped frames and seeks
    change nothing), at half the vertical detail, the frame's time kept."""

    def __init__(self, stream, deinterlace: bool = True):
        self.stream, self.aspect, self.deinterlace = stream, pixel_aspect(stream), bool(deinterlace)
        self._graph, self._graph_key = None, None

    def dims(self, frame) -> tuple[int, int]:
        """:func:`display_dims` of ``frame`` with the stream's pixel aspect."""
        return display_dims(frame, self.aspect)

    def first_field(self, frame):
        """``frame``'s first displayed field as a half-height frame, or None when it is not to be
        deinterlaced."""
        if not (self.deinterlace and frame.interlaced_frame):
            return None
        field = "bottom" if self.stream.codec_context.field_order in BOTTOM_FIELD_FIRST else "top"
        key = (frame.width, frame.height, frame.format.name, field)
        if key != self._graph_key:  # a graph per picture format (a stream may change size)
            import av.filter

            graph = av.filter.Graph()
            source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                      time_base=self.stream.time_base or Fraction(1, 1))
            take, sink = graph.add("field", f"type={field}"), graph.add("buffersink")
            source.link_to(take)
            take.link_to(sink)
            graph.configure()
            self._graph, self._graph_key = graph, key
        self._graph.push(frame)
        return self._graph.pull()

    def rgb(self, frame, width: int, height: int) -> np.ndarray:
        """:func:`to_rgb` of the frame as shown (deinterlaced where it is to be)."""
        return to_rgb(frame, width, height, self.first_field(frame))

    def crop(self, frame, size: int) -> np.ndarray:
        """PyAV frame -> ``(size, size, 3)`` uint8 as shown: shorter side resized to ``size``,
        centre crop (a copy)."""
        return np.ascontiguousarray(center_crop(self.rgb(frame, *resize_dims(*self.dims(frame), size)), size))


# ------------------------------------------------------------------------------ the packet index


@dataclass(frozen=True)
class PacketIndex:
    """The first video stream's packets in decode order, read by demuxing only (no decoding).

    pts: (P,) int64 ticks; end: (P,) int64 ticks (pts + duration); gop: (P,) int, the number of
    the keyframe-started group each packet belongs to; closed: (G + 1,) bool, ``closed[g]``: no
    packet of group g shows before its keyframe and the keyframe resets every reference (so
    group g decodes without the packets of group g - 1); time_base and origin (ticks of time 0,
    :func:`origin_ticks`; an int when exact); unreferenced: (P,) bool, the packet's picture is one
    no other picture references (:func:`_unreferenced`), so it is decoded only when it is picked
    (None: no packet is known to be, e.g. an index built without the check)."""

    pts: np.ndarray
    end: np.ndarray
    gop: np.ndarray
    closed: np.ndarray
    time_base: float
    origin: int | float
    unreferenced: np.ndarray | None = None


#: Codecs whose keyframes are checked to reset every reference (see :func:`_resets_references`).
_SKIPPABLE_CODECS = ("h264", "hevc", "vp8", "vp9")


class NalLayout:
    """How a length-prefixed (avcC / hvcC) H.264 or HEVC stream frames its NAL units, from the
    codec's extradata: ``length_size`` bytes before each unit; for HEVC, ``temporal_layers`` (0:
    not declared). None from :meth:`of` for Annex-B streams and other codecs."""

    def __init__(self, hevc: bool, length_size: int, temporal_layers: int = 1):
        self.hevc, self.length_size, self.temporal_layers = hevc, length_size, temporal_layers

    @classmethod
    def of(cls, codec: str, extradata: bytes | None) -> "NalLayout | None":
        if codec not in ("h264", "hevc") or not extradata or extradata[0] != 1:
            return None
        if codec == "h264":
            return cls(False, (extradata[4] & 3) + 1) if len(extradata) >= 7 else None
        if len(extradata) < 23:
            return None
        return cls(True, (extradata[21] & 3) + 1, (extradata[21] >> 3) & 7)

    def headers(self, data) -> list[int]:
        """The NAL header of each unit of an access unit ``data`` (bytes or a buffer): the first
        byte for H.264, the first two (big-endian) for HEVC; a unit cut short ends the list."""
        data, size, head = memoryview(data).cast("B"), self.length_size, 2 if self.hevc else 1
        out, pos = [], 0
        while pos + size + head <= len(data):
            length = int.from_bytes(data[pos:pos + size], "big")
            if length < head:
                break
            out.append(int.from_bytes(data[pos + size:pos + size + head], "big"))
            pos += size + length
        return out


def _hevc_type(header: int) -> int:
    return (header >> 9) & 0x3F


def _resets_references(codec: str, layout: NalLayout | None, packet_bytes) -> bool:
    """True when a keyframe packet starts a group nothing later can reference across: an H.264
    IDR picture (NAL type 5), an HEVC IDR (19, 20), a VP8 or VP9 keyframe. Annex-B H.264/HEVC
    (``layout`` None: no avcC/hvcC extradata) and other codecs answer False: their groups are
    never skipped."""
    if codec in ("vp8", "vp9"):
        return True
    if layout is None:
        return False
    if layout.hevc:
        return bool({_hevc_type(h) for h in layout.headers(packet_bytes)} & {19, 20})
    return 5 in {h & 0x1F for h in layout.headers(packet_bytes)}


#: NAL unit types an unreferenced access unit may carry besides its slices: H.264 access unit
#: delimiter (9) and filler (12); HEVC access unit delimiter (35), filler (38) and suffix SEI (40,
#: e.g. the picture's own hash). Anything else (parameter sets, prefix SEI that may persist, such
#: as a display orientation) keeps the packet.
_H264_BESIDE_SLICES, _HEVC_BESIDE_SLICES = frozenset({9, 12}), frozenset({35, 38, 40})


def _unreferenced(layout: NalLayout | None, packet_bytes) -> bool:
    """True when no other picture can reference this packet's picture, so the decoder's output
    for every other packet is the same without it: an H.264 access unit whose slices are non-IDR
    (type 1) with ``nal_ref_idc`` 0; an HEVC one whose slices are sub-layer non-reference
    pictures (types 0, 2, ..., 14) in a stream of one temporal layer (then no higher layer can
    reference them). Nothing else is claimed (False): Annex-B streams, other codecs, units
    besides slices other than :data:`_H264_BESIDE_SLICES` / :data:`_HEVC_BESIDE_SLICES`."""
    if layout is None or (layout.hevc and layout.temporal_layers != 1):
        return False
    headers = layout.headers(packet_bytes)
    if layout.hevc:
        types = [_hevc_type(h) for h in headers]
        slices = [t for t in types if t < 32]
        return bool(slices) and all(t < 16 and t % 2 == 0 for t in slices) and \
            set(types) - set(slices) <= _HEVC_BESIDE_SLICES
    slices = [h for h in headers if h & 0x1F in (1, 5)]
    return bool(slices) and all(h & 0x1F == 1 and not h & 0x60 for h in slices) and \
        {h & 0x1F for h in headers} - {1} <= _H264_BESIDE_SLICES


def index_packets(path: str) -> PacketIndex | None:
    """Demux ``path``'s first video stream; None when a packet lacks a PTS (then the sequential
    path decides what is what) or the codec is not one of :data:`_SKIPPABLE_CODECS`."""
    import av

    container, stream = open_video_stream(path)
    codec = stream.codec_context.name
    if codec not in _SKIPPABLE_CODECS or not stream.time_base or times_by_count(stream):
        container.close()
        return None
    extradata, time_base = stream.codec_context.extradata, float(stream.time_base)
    layout = NalLayout.of(codec, extradata)
    pts, end, gop, closed, unreferenced = [], [], [], [], []
    with container:
        try:
            for packet in packets(container, stream):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    return None
                if packet.is_keyframe or not gop:
                    closed.append(packet.is_keyframe and _resets_references(codec, layout, packet))
                    key_pts = packet.pts
                elif packet.pts < key_pts:
                    closed[-1] = False  # a leading picture: it may reference the previous group
                pts.append(packet.pts)
                end.append(packet.pts + (packet.duration or 0))
                gop.append(len(closed) - 1)
                unreferenced.append(not packet.is_keyframe and _unreferenced(layout, packet))
        except (av.FFmpegError, OSError):
            return None
        origin = origin_ticks(stream)
    if not pts:
        return None
    return PacketIndex(np.array(pts, np.int64), np.array(end, np.int64), np.array(gop, np.int64),
                       np.array(closed + [True], bool), time_base, min(pts) if origin is None else origin,
                       np.array(unreferenced, bool))


# ----------------------------------------------------------------- keyframe-aware path (fast path)


class GaveUp(Exception):
    """The keyframe-aware path cannot vouch for its picks; the sequential path runs instead."""


@dataclass(frozen=True)
class DecodePlan:
    """Which frames the samples of one video use, from its :class:`PacketIndex` alone.

    pick_pts: (n,) int64 ticks, the PTS of the frame sample ``k`` uses (the nearest PTS to the
    sample's target, near-ties to the earlier frame); pick_s: (n,) float64 seconds of the same,
    from the stream start; duration_s: the end of the last packet in seconds; picks_per_gop:
    (G + 1,) int, the number of distinct picked frames in each group of pictures; gop_of_pick:
    the group of each distinct picked PTS."""

    pick_pts: np.ndarray
    pick_s: np.ndarray
    duration_s: float
    picks_per_gop: np.ndarray
    gop_of_pick: dict[int, int]


def plan_indexed_decode(index: PacketIndex, sample_fps: float, references_only: bool = False) -> DecodePlan:
    """The :class:`DecodePlan` of ``sample_fps`` Hz samples over the video of ``index``
    (targets :func:`~curation.frames.sample_times_s` of the packets' span); with
    ``references_only``, each sample takes the nearest frame that is not ``index.unreferenced``
    (the approximate mode). Raises :class:`GaveUp` when two packets share a PTS or the packets
    span zero seconds."""
    order = np.argsort(index.pts, kind="stable")
    frame_pts = index.pts[order]                            # (P,) presentation order
    if np.any(np.diff(frame_pts) == 0):
        raise GaveUp("two packets share a PTS")
    pts_s = (frame_pts - index.origin) * index.time_base
    duration_s = float(((index.end - index.origin) * index.time_base).max())
    targets = sample_times_s(duration_s, sample_fps)
    if not len(targets):
        raise GaveUp("zero duration")
    if references_only and index.unreferenced is not None:
        candidates = np.flatnonzero(~index.unreferenced[order])  # positions a sample may take
        need = candidates[nearest_indices(pts_s[candidates], targets)]
    else:
        need = nearest_indices(pts_s, targets)              # (n,) positions in presentation order
    needed = np.unique(need)
    gops = index.gop[order][needed]
    return DecodePlan(pick_pts=frame_pts[need], pick_s=pts_s[need], duration_s=duration_s,
                      picks_per_gop=np.bincount(gops, minlength=len(index.closed)),
                      gop_of_pick=dict(zip(frame_pts[needed].tolist(), gops.tolist())))


class _InSampleOrder:
    """Writes a plan's samples to ``sink`` in sample order while picked frames arrive in decode
    order: each crop is held until every earlier sample is written, then dropped."""

    def __init__(self, pick_pts: np.ndarray, sink, size: int):
        self.pick_pts, self.sink, self.size = pick_pts, sink, size
        self.next_k = 0
        self.crops: dict[int, np.ndarray] = {}

    def add(self, pts: int, crop: np.ndarray) -> None:
        """``crop`` ``(size, size, 3)`` is the frame of PTS ``pts``; write what became ready."""
        self.crops[pts] = crop
        self.flush()

    def flush(self) -> None:
        n, picks = len(self.pick_pts), self.pick_pts
        while self.next_k < n and int(picks[self.next_k]) in self.crops:
            first = self.next_k
            while self.next_k < n and picks[self.next_k] == picks[first]:
                self.next_k += 1
            self.sink.add(np.broadcast_to(self.crops[int(picks[first])], (self.next_k - first, self.size, self.size, 3)))
        done_below = picks[self.next_k] if self.next_k < n else None
        for key in [k for k in self.crops if done_below is None or k < done_below]:
            del self.crops[key]

    @property
    def missing(self) -> int:
        """Samples not written yet."""
        return len(self.pick_pts) - self.next_k


def decode_indexed(path: str, sample_fps: float, size: int, sink, index: PacketIndex,
                   stats: dict | None = None, threads: int = 0, deinterlace: bool = True, approximate: bool = False):
    """Decode only what the samples need: within each group of pictures, packets after the
    group's last picked frame are not decoded when the next group does not reference them
    (``index.closed``); whole groups without a picked frame are skipped the same way; and a
    picture nothing references (``index.unreferenced``: most B-frames) is decoded only when it is
    picked. The picks are those of the sequential path (:func:`plan_indexed_decode`), and every
    picked frame is checked to come out of the decoder with its PTS. Returns ``(pts_s,
    duration_s)``; raises :class:`GaveUp` when a picked frame does not appear. ``stats`` (a dict)
    receives ``packets`` (in the stream), ``decoded`` (sent to the decoder) and ``unreferenced``
    (left out as unreferenced and not picked). Frames are shown as :class:`Display` (with
    ``deinterlace``) shows them. ``approximate``: every sample takes the nearest referenced frame
    (so no unreferenced picture is decoded) and the decoder skips the loop filter, as
    :func:`decode_sequential`'s approximate pass does, with group tails skipped too."""
    import av

    plan = plan_indexed_decode(index, sample_fps, references_only=approximate)
    left = plan.picks_per_gop.copy()                         # picked frames not yet decoded, per group
    wanted = dict(plan.gop_of_pick)
    unneeded = set() if index.unreferenced is None else set(index.pts[index.unreferenced].tolist()) - set(wanted)
    out = _InSampleOrder(plan.pick_pts, sink, size)
    container, stream = open_video_stream(path, threads)
    if approximate:
        stream.codec_context.options = {"skip_loop_filter": "all"}
    display = Display(stream, deinterlace)
    skip_until_key, current, sent, unreferenced = False, -1, 0, 0
    with container:
        try:
            for packet in packets(container, stream):
                if packet.size and packet.pts is not None:
                    if packet.is_keyframe:
                        current, skip_until_key = current + 1, False
                        if left[current] == 0 and index.closed[current + 1]:
                            skip_until_key = True  # nothing needed here, and the next group starts afresh
                    if skip_until_key:
                        continue
                    if packet.pts in unneeded:
                        unreferenced += 1
                        continue
                    sent += 1
                for frame in packet.decode():
                    gop = wanted.pop(frame.pts, None)
                    if gop is not None:
                        left[gop] -= 1
                        out.add(frame.pts, display.crop(frame, size))
                if current >= 0 and left[current] == 0 and index.closed[current + 1]:
                    skip_until_key = True
        except (av.FFmpegError, OSError) as exc:
            raise GaveUp(str(exc)) from None
    if out.missing:
        raise GaveUp(f"{out.missing} picked frames did not come out of the decoder")
    if stats is not None:
        stats.update(packets=len(index.pts), decoded=sent, unreferenced=unreferenced)
    return plan.pick_s, plan.duration_s


# ------------------------------------------------------------------------------- sequential path


def decode_sequential(path: str, sample_fps: float, size: int, sink, threads: int = 0, deinterlace: bool = True,
                      approximate: bool = False):
    """One sequential pass over every frame: a :class:`~curation.frames.NearestPicker` chooses,
    only the chosen frames are converted. Returns ``(pts_s, duration_s)``. Handles what the
    indexed path does not vouch for (damaged files, missing PTS, other codecs).

    ``approximate`` (``decode.exact: false``): the decoder skips every non-reference frame and
    the loop filter (FFmpeg's ``skip_frame=nonref``, ``skip_loop_filter=all``), so a sample uses
    the nearest *decoded* frame (a reference frame, at most a run of B-frames from the exact pick;
    its true PTS is recorded) and its pixels lack the deblocking; the number of samples is the
    exact one (the stream's end is read from the packets). Streams timed by count
    (:func:`times_by_count`) are decoded exactly: skipped frames would shift every time."""
    import av

    container, stream = open_video_stream(path, threads)
    approximate = approximate and not times_by_count(stream)
    if approximate:
        stream.codec_context.skip_frame = "NONREF"
        stream.codec_context.options = {"skip_loop_filter": "all"}
    display = Display(stream, deinterlace)
    picker = NearestPicker(sample_fps, 0.5)
    pts_s: list[float] = []
    cache: tuple[object, np.ndarray] | None = None  # the last converted frame (a frame can serve several targets)
    end_s, packet_end = 0.0, [-math.inf]

    def keep(picks):
        nonlocal cache
        for _k, t_s, frame in picks:
            if cache is None or cache[0] is not frame:
                cache = (frame, display.crop(frame, size))
            sink.add(cache[1][None])
            pts_s.append(float(t_s))

    try:
        with container:
            first_pts = None
            for t_s, end, frame in frame_times(stream, decoded_frames(container, stream, packet_end)):
                first_pts = frame.pts if first_pts is None else first_pts
                keep(picker.push(t_s, frame))
                end_s = max(end_s, end)
            if approximate and first_pts is not None and stream.time_base:
                origin = origin_ticks(stream)
                end_s = max(end_s, float((packet_end[0] - (first_pts if origin is None else origin)) * stream.time_base))
            n = len(sample_times_s(end_s, sample_fps))
            keep(picker.finish(n))
    except (av.FFmpegError, OSError) as exc:
        raise decode_error(path, "decoding failed", exc) from None
    if picker.prev is None:
        raise decode_error(path, "no frame could be decoded")
    if n == 0:
        raise decode_error(path, "the decoded frames span zero seconds")
    sink.keep_first(n)  # a pick may have been made for a target past the last frame's end
    return np.array(pts_s[:n], np.float64), float(end_s)


def decode_pyav(path: str, sample_fps: float, size: int, sink, threads: int = 0, deinterlace: bool = True,
                exact: bool = True):
    """The keyframe-aware path where the packet index allows it, else (or when it gives up) the
    sequential one; both pick the same frames. ``exact=False``: both in their approximate mode
    (the nearest referenced frame, no loop filter), which also pick the same frames. Returns
    ``(pts_s, duration_s)``."""
    index = index_packets(path)
    if index is not None:
        try:
            return decode_indexed(path, sample_fps, size, sink, index, threads=threads, deinterlace=deinterlace,
                                  approximate=not exact)
        except GaveUp:
            sink.keep_first(0)
    return decode_sequential(path, sample_fps, size, sink, threads, deinterlace, approximate=not exact)
