"""Real PyAV decoding of files the tests encode: frame choice, codecs, geometry, and every bad input."""

import subprocess
import sys

import av
import numpy as np
import pytest
from PIL import Image

from ncl_ray.data.decode import ClipSpec, DecodeError, decode_batch, decode_frames, sample_times
from ncl_ray.data.naive import decode_naive
from ncl_ray.data.rgb import to_rgb
from ncl_ray.data.synthetic import write_video

STEP = 6  # frame i is painted gray level STEP * i, so a decoded pixel tells which frame it came from


def numbered(n, h=48, w=64):
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i] = (STEP * i) % 252
    return frames


def frame_index(clip):
    return np.round(clip[:, :, :, :].reshape(len(clip), -1).mean(1) / STEP).astype(int).tolist()


def expected_indices(times, num_frames, duration):
    """Independent answer: the last frame whose presentation time is <= each sample time."""
    return [int(np.searchsorted(times, t + 1e-6, side="right") - 1) for t in sample_times(0.0, duration, num_frames)]


@pytest.mark.parametrize("codec,ext", [("libx264", "mp4"), ("libvpx-vp9", "webm"), ("mpeg4", "avi")])
def test_codecs_pick_the_right_frames(tmp_path, codec, ext):
    n, fps = 40, 8
    path = write_video(str(tmp_path / f"v.{ext}"), numbered(n), fps=fps, codec=codec)
    clip = decode_frames(path, 8, 32)
    assert clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
    assert frame_index(clip) == expected_indices(np.arange(n) / fps, 8, n / fps)
    # same frames as an independent full decode + Python resize
    assert np.abs(clip.astype(int) - decode_naive(path, 8, 32).astype(int)).mean() < 3


def test_variable_frame_rate_uses_timestamps(tmp_path):
    n = 40
    gaps = np.where(np.arange(n - 1) % 2 == 0, 0.04, 0.3)  # alternating short and long frames
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    path = write_video(str(tmp_path / "vfr.mp4"), numbered(n), times=times)
    with av.open(path) as c:
        s = c.streams.video[0]
        duration = float(s.duration * s.time_base)
    clip = decode_frames(path, 10, 32)
    assert frame_index(clip) == expected_indices(times, 10, duration)
    # an index-based sampler would differ: VFR matters here
    assert frame_index(clip) != np.linspace(0, n - 1, 10).round().astype(int).tolist()


def test_long_video_is_decoded_sparsely(tmp_path):
    n = 600  # 20 s at 30 fps, keyframe every second
    path = write_video(str(tmp_path / "long.mp4"), numbered(n, 32, 32), fps=30, gop=30)
    stats = {}
    decode_frames(path, 12, 32, stats=stats)
    assert stats["seeks"] >= 5 and stats["decoded"] < n / 2


def test_odd_size_resize_and_centre_crop(tmp_path):
    frames = np.zeros((6, 51, 97, 3), np.uint8)  # odd sizes, wide
    frames[:, :, 40:57] = 255  # a white vertical band in the middle
    path = write_video(str(tmp_path / "odd.mp4"), frames, codec="mpeg4", pix_fmt="yuv420p")
    clip = decode_frames(path, 4, 24)
    assert clip.shape == (4, 24, 24, 3)
    centre, edge = clip[:, :, 10:14].mean(), clip[:, :, :3].mean()
    assert centre > 200 and edge < 40


def test_rotation_metadata_is_applied(tmp_path):
    frames = np.zeros((4, 32, 64, 3), np.uint8)
    frames[:, :, 16:32] = 255  # white just left of the centre of the stored (wide) picture
    path = write_video(str(tmp_path / "rot.mp4"), frames, rotation=90)
    clip = decode_frames(path, 2, 32)
    # displayed rotated 90 degrees counter-clockwise (tall): the band lies below the centre
    assert clip[:, 18:30].mean() > 200 and clip[:, 2:14].mean() < 40


def test_fewer_frames_than_asked_repeats(tmp_path):
    path = write_video(str(tmp_path / "one.mp4"), numbered(1) + 100)
    clip = decode_frames(path, 12, 16)
    assert clip.shape == (12, 16, 16, 3) and np.ptp(clip.reshape(12, -1).mean(1)) < 1
    path = write_video(str(tmp_path / "three.mp4"), numbered(3))
    assert sorted(set(frame_index(decode_frames(path, 9, 16)))) == [0, 1, 2]


def test_frames_converted_in_batches_or_one_by_one_are_the_same(tmp_path, monkeypatch):
    """Decoded frames wait to be converted in one batch, up to HOLD_FRAME_BYTES; with no room each is converted
    as it comes. Repeated frames (more samples than frames) copy the row converted before."""
    import ncl_ray.data.decode as dec

    long = write_video(str(tmp_path / "long.mp4"), numbered(200, 32, 32), fps=25, gop=25)
    short = write_video(str(tmp_path / "three.mp4"), numbered(3))
    batched = [decode_frames(long, 12, 16), decode_frames(short, 9, 16)]
    monkeypatch.setattr(dec, "HOLD_FRAME_BYTES", 0)
    one_by_one = [decode_frames(long, 12, 16), decode_frames(short, 9, 16)]
    assert all(np.array_equal(a, b) for a, b in zip(batched, one_by_one))
    assert frame_index(batched[0]) == [i % 42 for i in expected_indices(np.arange(200) / 25, 12, 8.0)]


def _audio_only(path):
    with av.open(path, "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        f.sample_rate = 8000
        for p in list(s.encode(f)) + list(s.encode()):
            c.mux(p)


def _corrupt_payload(src, dst):
    b = bytearray(open(src, "rb").read())
    i, j = b.find(b"mdat"), b.find(b"moov")
    b[i + 4: j - 4] = np.random.default_rng(0).integers(0, 256, j - i - 8, dtype=np.uint8).tobytes()
    open(dst, "wb").write(bytes(b))


@pytest.mark.parametrize("case,reason", [
    ("missing", "file not found"),
    ("empty", "empty file"),
    ("text", "not a readable media file"),
    ("truncated_mp4", "not a readable media file"),
    ("truncated_webm", "truncated"),
    ("image", "an image"),
    ("audio", "no video stream"),
    ("no_decodable_frame", "no decodable frame"),
])
def test_bad_inputs_raise_typed_errors_naming_the_file(tmp_path, case, reason):
    path = str(tmp_path / f"{case}.bin")
    good = numbered(120, 32, 32)
    if case == "empty":
        open(path, "wb").close()
    elif case == "text":
        open(path, "w").write("this is not a video\n" * 100)
    elif case == "truncated_mp4":
        src = write_video(str(tmp_path / "src.mp4"), good)
        open(path, "wb").write(open(src, "rb").read()[:2000])
    elif case == "truncated_webm":
        src = write_video(str(tmp_path / "src.webm"), good, fps=30, codec="libvpx-vp9")
        data = open(src, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    elif case == "image":
        path = str(tmp_path / "still.png")
        Image.fromarray(good[3]).save(path)
    elif case == "audio":
        path = str(tmp_path / "sound.wav")
        _audio_only(path)
    elif case == "no_decodable_frame":
        src = write_video(str(tmp_path / "src.mp4"), good, fps=30)
        _corrupt_payload(src, path)
    with pytest.raises(DecodeError) as err:
        decode_frames(path, 8, 32)
    assert reason in err.value.reason and path in str(err.value)


def test_decode_batch_reports_a_bad_video_and_keeps_the_good_one(tmp_path):
    good = write_video(str(tmp_path / "good.mp4"), numbered(24), fps=8)
    batch = {"video_id": np.array(["a", "b"], dtype=object),
             "path": np.array([good, str(tmp_path / "missing.mp4")], dtype=object)}
    out = decode_batch(batch, ClipSpec(4, 16, encoding="raw"))
    assert list(out["video_id"]) == ["a", "b"] and list(out["error"]) == ["", "file not found"]
    frames = np.frombuffer(out["frames"][0], np.uint8).reshape(4, 16, 16, 3)
    assert np.array_equal(frames, decode_frames(good, 4, 16)) and out["frames"][1] == b""


def test_decode_module_does_not_import_torch():
    """Decode workers import only this module: keeping torch out saves seconds per fresh worker."""
    code = "import sys, ncl_ray.data.decode; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_thread_settings_do_not_change_the_frames(tmp_path):
    path = write_video(str(tmp_path / "v.mp4"), numbered(40), fps=8)
    ref = decode_frames(path, 6, 24, threads=1)
    for threads in (0, 3):
        assert np.array_equal(decode_frames(path, 6, 24, threads=threads), ref)


def test_long_gop_is_never_seeked_back_into(tmp_path):
    """Keyframe every 8 s, samples every ~1.7 s: every sample's keyframe is behind the decoder but the first
    of each GOP, so the decoder runs forward instead of seeking back (each frame decoded at most once)."""
    n, fps = 600, 30  # 20 s
    path = write_video(str(tmp_path / "gop.mp4"), numbered(n, 32, 32), fps=fps, gop=8 * fps)
    stats = {}
    clip = decode_frames(path, 12, 32, stats=stats)
    assert stats["decoded"] <= n  # the old decoder sought back to keyframes it had passed (more than n)
    times = [i / fps for i in range(n)]
    assert frame_index(clip) == [i % 42 for i in expected_indices(times, 12, n / fps)]


def test_jitter_draws_one_time_inside_each_slice():
    g = np.random.default_rng(0)
    times = sample_times(2.0, 12.0, 6, jitter=g)
    for k, t in enumerate(times):
        assert 2.0 + k * 2.0 <= t < 2.0 + (k + 1) * 2.0
    assert times != sample_times(2.0, 12.0, 6)
    assert sample_times(2.0, 12.0, 6, jitter=np.random.default_rng(1)) != times


def test_jpeg_clip_codec_round_trip_and_size():
    from ncl_ray.data.framecodec import decode_clip, encode_clip

    g = np.random.default_rng(0)
    smooth = np.clip(np.cumsum(g.normal(0, 3, size=(4, 64, 64, 3)), axis=2), 0, 255).astype(np.uint8)
    blob = encode_clip(smooth, "jpeg", 90)
    back = decode_clip(blob, "jpeg", smooth.shape)
    assert back.shape == smooth.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - smooth).mean() < 4
    assert len(blob) < smooth.nbytes / 2
    assert np.array_equal(decode_clip(encode_clip(smooth, "raw"), "raw", smooth.shape), smooth)
    with pytest.raises(ValueError, match="holds 4 frames, expected 5"):
        decode_clip(blob, "jpeg", (5, 64, 64, 3))


def encoded(path, codec, options, n=150, fps=25):
    """Numbered frames (64 x 48) encoded with `codec` and its `options`: B-frames, GOPs as the test needs."""
    with av.open(path, "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = options
        for arr in numbered(n):
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_non_reference_frames_between_samples_are_not_decoded(tmp_path, monkeypatch):
    """H.264 with non-reference B-frames: the decoder skips the ones no sample shows (FFmpeg's skip_frame), stops on
    each sample's frame (known from the packets) instead of one past it, and still picks exactly the same frames."""

    n, fps = 96, 8
    path = encoded(str(tmp_path / "bframes.mp4"), "libx264",
                   {"x264-params": "bframes=3:b-pyramid=0:b-adapt=0:keyint=48:scenecut=0"}, n, fps)
    skipped, full = {}, {}
    clip = decode_frames(path, 10, 32, stats=skipped)
    assert frame_index(clip) == [i % 42 for i in expected_indices(np.arange(n) / fps, 10, n / fps)]
    import ncl_ray.data.cursor as cursor

    plain = cursor.decoded_frames
    monkeypatch.setattr(cursor, "decoded_frames", lambda source, stream, counts, wanted=None, drain=None:
                        plain(source, stream, counts))
    assert np.array_equal(decode_frames(path, 10, 32, stats=full), clip)  # every frame decoded: same clip
    assert skipped["decoded"] < full["decoded"] / 2  # 3 of 4 frames are non-reference B-frames: most skipped


def test_decoder_is_drained_instead_of_fed_past_a_sample(tmp_path, monkeypatch):
    """H.264 with B-frames: FFmpeg holds 2 frames back for reordering, so a sample's frame used to come out only
    after 2 more packets were decoded. Where a seek follows anyway, the decoder is drained instead: one packet
    per frame, same frames. Draining where no seek follows (forced here) must still give the same frames."""
    import ncl_ray.data.decode as dec

    n, fps = 240, 24
    path = encoded(str(tmp_path / "gop.mp4"), "libx264",
                   {"x264-params": "bframes=2:b-pyramid=2:b-adapt=0:keyint=24:scenecut=0"}, n, fps)
    expected = [i % 42 for i in expected_indices(np.arange(n) / fps, 10, n / fps)]
    drained, fed = {}, {}
    clip = decode_frames(path, 10, 32, stats=drained)  # one sample per 1 s GOP: a seek before each
    assert frame_index(clip) == expected and drained["seeks"] == 9
    monkeypatch.setattr(dec, "drain_after", lambda *a: False)
    assert np.array_equal(decode_frames(path, 10, 32, stats=fed), clip)
    assert fed["packets"] - drained["packets"] >= 2 * 9  # 2 held-back frames pushed out by packets, per seek
    monkeypatch.setattr(dec, "drain_after", lambda *a: True)  # drained even where the decoder must go on
    for T in (10, 37):
        assert frame_index(decode_frames(path, T, 32)) == [i % 42 for i in expected_indices(np.arange(n) / fps, T,
                                                                                              n / fps)]


@pytest.mark.parametrize("name,codec,options", [
    ("open-gop.mp4", "libx264", {"x264-params": "bframes=2:open-gop=1:b-adapt=0:keyint=25:scenecut=0"}),
    ("bframes.avi", "mpeg4", {"bf": "2", "g": "25"}),
])
def test_kept_packets_and_seeking_both_pick_the_frame_shown(tmp_path, monkeypatch, name, codec, options):
    """Open-GOP H.264 and B-frame MPEG-4 in AVI show B-frames before the keyframe that precedes them in decode
    order. A seek to the sample time lands on that keyframe, after the sample; both ways of reaching a sample
    (packets kept in memory, or seeking the file) must start from the keyframe shown before it."""
    import ncl_ray.data.decode as dec

    path = encoded(str(tmp_path / name), codec, options)
    with av.open(path) as c:  # the independent answer: every frame decoded in order, sorted by display time
        s = c.streams.video[0]
        frames = sorted(((float(f.pts * s.time_base), to_rgb(f, 32)) for f in c.decode(s)), key=lambda x: x[0])
        start = float(s.start_time * s.time_base)
        duration = float(s.duration * s.time_base) if s.duration else c.duration / 1e6
    shown = [t for t, _ in frames]
    for keep in (dec.KEEP_PACKET_BYTES, 0):
        monkeypatch.setattr(dec, "KEEP_PACKET_BYTES", keep)
        for T, seed in [(4, None), (12, 1), (12, 2), (25, 3), (7, 4), (9, 5)]:
            times = sample_times(start, duration, T, None if seed is None else np.random.default_rng(seed))
            want = [frames[max(0, int(np.searchsorted(shown, t + 1e-6, side="right")) - 1)][1] for t in times]
            stats = {}
            clip = decode_frames(path, T, 32, stats=stats,
                                 jitter=None if seed is None else np.random.default_rng(seed))
            assert [np.array_equal(a, b) for a, b in zip(clip, want)] == [True] * T, (keep, T, seed)
            assert stats["packets_in_memory"] == bool(keep)
