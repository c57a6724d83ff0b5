"""Time windows of a video joined from scenes: real PyAV encoding and decoding, each window's frames from its
own span."""

import numpy as np
import pytest

from ncl_ray.data.limits import DecodeError
from ncl_ray.data.synthetic import write_video
from ncl_ray.data.windows import decode_windows, plan_windows, video_duration

COLORS = np.array([[220, 30, 30], [30, 220, 30], [30, 30, 220]], np.uint8)  # red, green, blue scenes


@pytest.fixture(scope="module")
def three_scenes(tmp_path_factory):
    """12 s at 8 fps: 4 s red, 4 s green, 4 s blue (a keyframe every 8 frames)."""
    frames = np.repeat(COLORS[:, None, None, None, :], 32, axis=1)  # (3, 32, 1, 1, 3)
    frames = np.broadcast_to(frames, (3, 32, 48, 48, 3)).reshape(96, 48, 48, 3)
    return write_video(str(tmp_path_factory.mktemp("v") / "scenes.mp4"), np.ascontiguousarray(frames), fps=8)


def _scene(frame: np.ndarray) -> int:
    return int(np.argmax(frame.reshape(-1, 3).mean(axis=0)))


def test_plan_covers_the_video_with_a_last_window_at_its_end():
    assert plan_windows(12.0, 4.0, 4.0) == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]
    assert plan_windows(13.0, 4.0, 4.0)[-1] == (9.0, 13.0)  # the tail is its own window, ending at the end
    assert plan_windows(3.0, 10.0, 5.0) == [(0.0, 3.0)]  # shorter than a window: the whole video
    with pytest.raises(ValueError, match="positive"):
        plan_windows(10.0, 0.0, 1.0)


def test_each_window_decodes_its_own_scene(three_scenes):
    assert video_duration(three_scenes) == pytest.approx(12.0, abs=0.2)
    spans = plan_windows(video_duration(three_scenes), 4.0, 2.0)  # 0-4, 2-6, 4-8, 6-10, 8-12
    clips = decode_windows(three_scenes, spans, num_frames=4, size=32)
    assert clips.shape == (len(spans), 4, 32, 32, 3) and clips.dtype == np.uint8
    assert [[_scene(f) for f in clip] for clip in clips] == [[0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1],
                                                              [1, 1, 2, 2], [2, 2, 2, 2]]


def test_a_missing_file_is_refused_naming_it(tmp_path):
    with pytest.raises(DecodeError, match="gone.mp4"):
        video_duration(str(tmp_path / "gone.mp4"))
