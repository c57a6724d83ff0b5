"""What a video's packets say before anything is decoded, and the decode plan drawn from it. No Ray.

One demux pass (no decoding) gives the keyframe times and every packet's pts, and keeps the packets of a stream
small enough to hold (decoding then reads them from memory). From them `decode_frames` knows, for each sample
time, which frame is shown then (`target_pts`), whether reaching it needs a jump (`seek_needed`: only when the
keyframe before it lies ahead of the decoder), where that jump goes (`start_position` in the kept packets,
`seek_target` in the file) and whether the decoder can be drained right after that frame's packet
(`drain_after`: when the next sample that shows another frame starts from a jump anyway, or there is none)."""

import bisect
from typing import List, NamedTuple, Optional, Sequence

import av

EPS = 1e-6  # seconds: times closer than this are the same instant


class PacketIndex(NamedTuple):
    keys: List[float]  # keyframe times, sorted
    pts: List[int]  # every packet's pts, sorted; empty when any packet lacks one
    packets: Optional[list]  # every packet in decode order (the end-of-stream one too), or None: not kept
    key_pos: List[int]  # position in decode order of each keyframe in `keys`
    key_dts: List[int]  # decode timestamp of each keyframe in `keys` (its pts where it has none)


def packet_index(container, stream, keep_bytes: int = 0) -> PacketIndex:
    """Read the packets (demuxed, not decoded). Keyframe times are empty when the stream cannot be read this
    way (the decoder then seeks by distance alone), the pts list when any packet lacks one (then no frame is
    known in advance). The packets themselves are kept when they total at most `keep_bytes`: decoding then
    reads them from memory instead of seeking and demuxing the file a second time; otherwise the container
    is rewound."""
    tb = stream.time_base
    keys, pts, kept, total = [], [], [], 0
    try:
        for n, packet in enumerate(container.demux(stream)):
            if kept is not None:
                total += packet.size
                if total > keep_bytes:
                    kept = None
                else:
                    kept.append(packet)
            if packet.size == 0:
                continue  # the demuxer's end-of-stream flush (kept: decoding it drains the decoder)
            if packet.is_keyframe and packet.pts is not None:
                keys.append((float(packet.pts * tb), n, packet.pts if packet.dts is None else packet.dts))
            pts.append(packet.pts)
    except av.error.FFmpegError:
        keys, pts, kept = [], [], None  # a damaged stream: seek by distance, no known frames, nothing kept
    keys.sort()
    if kept is None or not keys:
        kept = None
        container.seek(stream.start_time or 0, stream=stream, backward=True, any_frame=False)
    return PacketIndex([k[0] for k in keys], [] if None in pts else sorted(pts), kept, [k[1] for k in keys],
                       [k[2] for k in keys])


def key_before(keys: List[float], t: float) -> int:
    """Index in `keys` of the last keyframe shown at or before t; -1 when none is."""
    return bisect.bisect_right(keys, t + EPS) - 1


def seek_target(index: PacketIndex, t: float, tb) -> int:
    """The timestamp to seek to for sample time t: the decode timestamp of the keyframe shown before t (t
    itself without keyframe times). Demuxers index by decode time (AVI, MP4), where a seek to t can land on
    a keyframe shown after t (open GOPs, B-frames); a keyframe's decode time is never after its display."""
    i = key_before(index.keys, t)
    return index.key_dts[i] if i >= 0 else int(t / tb)


def start_position(index: PacketIndex, t: float) -> int:
    """Decode-order position of the kept packet to decode from for sample time t: the keyframe before t."""
    i = key_before(index.keys, t)
    return index.key_pos[i] if i >= 0 else 0


def target_pts(pts: List[int], times: Sequence[float], tb) -> List[Optional[int]]:
    """For each sample time, the pts of the frame shown then: the last packet pts at or before it (the first
    packet's before the stream starts); None for all when the pts are unknown."""
    if not pts:
        return [None] * len(times)
    step = float(tb)
    secs = [p * step for p in pts]
    return [pts[max(0, bisect.bisect_right(secs, t + EPS) - 1)] for t in times]


def seek_needed(keys: List[float], t: float, cur_time: float, seek_gap: float, have_frame: bool) -> bool:
    """Seek before sample time `t` with the decoder at `cur_time`? Only when the keyframe before t lies ahead
    of the decoder (seeking to one it has already decoded past would decode the same frames again); without
    keyframe times, when t is more than `seek_gap` seconds ahead."""
    i = key_before(keys, t)
    key_ahead = keys[i] > cur_time + EPS if (keys and i >= 0) else t - cur_time > seek_gap
    return key_ahead and (not have_frame or t - cur_time > EPS)


def drain_after(k: int, keys: List[float], times: Sequence[float], shown: List[Optional[int]],
                targets: List[Optional[int]], tb, seek_gap: float) -> bool:
    """May the decoder be drained once sample k's frame is fed? Yes when that frame is known (targets[k]) and
    the next sample showing another frame starts from a seek, or no later sample shows another frame; then
    the packets after it would only have been decoded to push out frames FFmpeg holds back for reordering."""
    if targets[k] is None or not keys:
        return False
    nxt = next((j for j in range(k + 1, len(times)) if shown[j] != shown[k]), None)
    return nxt is None or seek_needed(keys, times[nxt], float(targets[k] * tb), seek_gap, True)
