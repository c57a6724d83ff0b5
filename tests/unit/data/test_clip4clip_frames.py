"""CLIP4Clip's frames and CLIP's resize on real encoded files: which frames, how many, the mask, the pixels."""

from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from ncl_ray.data.clip4clip_frames import decode_clip4clip
from ncl_ray.data.rgb import clip_resize
from ncl_ray.data.decode import ClipSpec, DecodeError, decode_batch, decode_video
from ncl_ray.data.synthetic import write_video
from videos import barcoded, read_code

@pytest.mark.parametrize("rate,n,expected", [
    # 25 fps, 4 s: the first frame of each second, fewer than 12: all kept, the rest masked
    (25, 100, [0, 25, 50, 75]),
    # 29.97 fps is read as int(29.97) = 29; 450 frames give 16 per-second frames (0, 29, ..., 435), and
    # np.linspace(0, 15, 12) truncated = 0 1 2 4 5 6 8 9 10 12 13 15 picks 12 of them
    (Fraction(30000, 1001), 450, [0, 29, 58, 116, 145, 174, 232, 261, 290, 348, 377, 435]),
])
def test_one_frame_per_whole_second_then_linspace_and_a_mask(tmp_path, rate, n, expected):
    path = write_video(str(tmp_path / "v.mp4"), barcoded(n), fps=rate, gop=30)
    clip, real = decode_clip4clip(path, 12, 36, resize="clip4clip")
    assert clip.shape == (12, 36, 36, 3) and real == len(expected)
    assert [read_code(clip[k]) for k in range(real)] == expected
    assert not clip[real:].any()  # zero frames after the real ones
    frames, n2 = decode_video(path, 12, 36, sampler="clip4clip", resize="area")
    assert n2 == real and [read_code(frames[k]) for k in range(real)] == expected
    out = decode_batch({"video_id": np.array(["v"]), "path": np.array([path])},
                       ClipSpec(12, 36, sampler="clip4clip", encoding="raw"))
    assert out["n_frames"].tolist() == [real] and out["error"].tolist() == [""]


def test_missing_file_is_named():
    with pytest.raises(DecodeError, match="nope.mp4: file not found"):
        decode_video("nope.mp4", 12, 32, sampler="clip4clip")


@pytest.mark.parametrize("w,h", [(640, 272), (320, 240), (176, 144), (240, 320), (225, 224)])
def test_resize_equals_torchvision_resize_and_centre_crop(w, h):
    """CLIP's preprocessing as CLIP4Clip applies it: Resize(224, bicubic) then CenterCrop(224) on PIL images."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Resize

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    reference = np.asarray(Compose([Resize(224, interpolation=InterpolationMode.BICUBIC),
                                    CenterCrop(224)])(Image.fromarray(rgb)))
    assert np.array_equal(clip_resize(rgb, 224), reference)
