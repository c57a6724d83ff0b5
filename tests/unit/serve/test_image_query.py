"""Image queries: JPEG and PNG read within bounds (a huge declared size refused before decoding), embedded as a
still clip by the video tower; the guard lets an image body through on its one path only."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from ncl_ray.data.transforms import normalize_frames
from ncl_ray.model.clip import ModelSpec, build_model
from ncl_ray.serve.guard import check_request
from serving import png_header_only

from ncl_ray.serve.image_query import MAX_IMAGE_BYTES, ImageError, embed_image, read_image, still_clip


def _encoded(fmt: str, size=(40, 30)) -> bytes:
    rgb = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def test_jpeg_and_png_are_read_and_anything_else_is_refused():
    assert read_image(_encoded("PNG")).shape == (30, 40, 3)
    assert read_image(_encoded("JPEG")).shape == (30, 40, 3)
    for bad, why in ((_encoded("GIF"), "not a readable JPEG or PNG"), (b"\xff\xd8 not really", "not a readable"),
                     (png_header_only(7000, 7000), "7000 x 7000 pixels"),
                     (png_header_only(16000, 16000), "declares more than"),
                     (b"\0" * (MAX_IMAGE_BYTES + 1), "larger than")):
        with pytest.raises(ImageError, match=why):
            read_image(bad)


def test_an_image_is_embedded_as_a_still_clip_by_the_video_tower():
    torch.manual_seed(0)
    model = build_model(ModelSpec("tiny", "", "meanP", 16, 16, embed_dim=8)).eval()
    rgb = read_image(_encoded("PNG", (64, 48)))
    clip = still_clip(rgb, 16, 4)
    assert clip.shape == (1, 4, 16, 16, 3) and (clip[0, 0] == clip[0, 3]).all()
    got = embed_image(model, rgb, 16, 4)
    with torch.no_grad():
        want = model.encode_video(normalize_frames(torch.from_numpy(clip))).numpy()[0]
    assert np.allclose(got, want, atol=1e-6) and abs(np.linalg.norm(got) - 1) < 1e-5


def test_the_guard_takes_an_image_body_on_its_path_only():
    h = {"host": "127.0.0.1", "content-length": "1000"}
    hosts = {"127.0.0.1"}
    assert check_request("POST", "/search/image", {**h, "content-type": "image/png"}, hosts) is None
    assert check_request("POST", "/search/image", {**h, "content-type": "application/json"}, hosts)[0] == 415
    assert check_request("POST", "/search/image", {**h, "content-type": "text/plain"}, hosts)[0] == 415
    assert check_request("POST", "/search", {**h, "content-type": "image/png"}, hosts)[0] == 415
    big = {"host": "127.0.0.1", "content-type": "image/jpeg", "content-length": str(9 * 2 ** 20)}
    assert check_request("POST", "/search/image", big, hosts)[0] == 413
