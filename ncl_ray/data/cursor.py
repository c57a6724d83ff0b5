"""The decoder's place in one stream (decode.py's sparse decoding): the frames a packet source yields, with
non-reference frames skipped where no sample shows them and a drain instead of more packets before a jump
(`decoded_frames`), and a `Cursor` that walks them to each sample time, restarting from a keyframe when told.
No Ray.
"""

from typing import Iterable, Iterator, List, Optional

import av

from ncl_ray.data.packets import seek_target, start_position


def decoded_frames(source: Iterable, stream, counts: List[int], wanted: Optional[set] = None,
            drain: Optional[dict] = None) -> Iterator[av.VideoFrame]:
    """Frames decoded from the packets of `source` (the container's demuxer, or packets kept in memory);
    corrupt packets are skipped (counted in counts[0]), not fatal; counts[1] counts the packets fed. With
    `wanted` (the pts of the frames that will be kept), the decoder drops non-reference frames of every other
    packet (FFmpeg's skip_frame=NONREF: nothing depends on them, so the kept frames are bit-identical). With
    `drain` ({"at": pts}), once the packet of that pts is fed the decoder is drained instead of fed more:
    FFmpeg holds frames back for reordering (x264 with B-frames: 2), and draining hands them out without
    decoding the packets after them; the generator then ends and sets drain["drained"]."""
    cc = stream.codec_context
    mode = cc.skip_frame  # as the previous generator (before a seek) left it
    for packet in source:
        if wanted is not None:
            want = "DEFAULT" if packet.pts is None or packet.pts in wanted else "NONREF"
            if want != mode:
                cc.skip_frame = mode = want
        counts[1] += 1
        try:
            yield from packet.decode()
        except av.error.FFmpegError:  # corrupt packet: skip it, keep decoding
            counts[0] += 1
        if drain is not None and drain["at"] is not None and packet.pts == drain["at"]:
            drain["drained"] = True
            try:
                for f in cc.decode(None):
                    f.time_base = stream.time_base  # as packet.decode() sets it
                    yield f
            except av.error.FFmpegError:
                counts[0] += 1
            return


def frame_time(frame: av.VideoFrame, stream) -> Optional[float]:
    if frame.time is not None:
        return float(frame.time)
    return None if frame.pts is None else float(frame.pts * stream.time_base)


class Cursor:
    """The decoder's place in one stream: `cur`, the last frame at or before the sample time; `pending`, a frame
    read past it; restarts from the keyframe before a time (a seek, or the kept packets from there)."""

    def __init__(self, container, stream, index, counts, wanted, deadline, start: float):
        self.container, self.stream, self.index, self.counts, self.wanted = container, stream, index, counts, wanted
        self.deadline = deadline
        self.drain = {"at": None, "drained": False} if index.keys and index.pts else None
        source = container.demux(stream) if index.packets is None else index.packets
        self.it = decoded_frames(source, stream, counts, wanted, self.drain)
        self.cur = self.pending = None
        self.cur_time, self.decoded, self.seeks, self.ended = start, 0, 0, False

    def _restart(self, t: float):
        """Frames from the keyframe before t."""
        if self.index.packets is None:
            self.container.seek(seek_target(self.index, t, self.stream.time_base), stream=self.stream,
                                backward=True, any_frame=False)
            source = self.container.demux(self.stream)
        else:
            self.stream.codec_context.flush_buffers()  # what a seek does to the decoder
            source = self.index.packets[start_position(self.index, t):]
        if self.drain is not None:
            self.drain["drained"] = False
        return decoded_frames(source, self.stream, self.counts, self.wanted, self.drain)

    def seek(self, t: float) -> None:
        try:
            self.it, self.pending = self._restart(t), None
            self.seeks += 1
        except av.error.FFmpegError:
            pass  # unseekable: keep decoding forward

    def advance(self, t: float, target: Optional[int]):
        """The frame shown at time t (stopping on `target`, its pts, when the packets tell it), or None; `ended`
        says the stream ended on the way."""
        self.ended = False
        # the frame shown at t is known from the packets: stop on it instead of decoding one frame past it
        while self.cur is None or target is None or self.cur.pts != target:
            self.deadline.check()
            f = self.pending if self.pending is not None else next(self.it, None)
            self.pending = None
            if f is None and self.drain is not None and self.drain["drained"]:
                # drained, yet more frames are needed (a corrupt packet held the frame back): decode again
                self.drain["at"], self.it = None, self._restart(t)
                self.seeks += 1
                continue
            if f is None:  # end of stream: the last frame stands for samples in its display time
                self.ended = True
                break
            self.decoded += 1
            ft = frame_time(f, self.stream)
            if ft is None or ft <= t + 1e-6:
                self.cur, self.cur_time = f, (ft if ft is not None else self.cur_time)
            else:
                self.pending = f
                break
        return self.cur if self.cur is not None else self.pending  # a sample before the first frame: the first
