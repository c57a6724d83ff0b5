"""JPEG clip blobs through torchvision's decoder (the GPU path's code, run here on the CPU) against PIL's."""

import numpy as np
import pytest
import torch

from ncl_ray.data.framecodec import decode_clip, encode_clip, jpeg_parts
from ncl_ray.data.gpujpeg import decode_clips, gpu_jpeg_available


def test_torchvision_decoding_of_clip_blobs_matches_pil_and_keeps_frame_order():
    yy, xx = np.mgrid[0:32, 0:32]
    clips = [np.stack([np.stack([(xx * 8 + t * 40 + i) % 256, yy * 8, np.full_like(xx, 60 * t)], -1)
                       for t in range(4)]).astype(np.uint8) for i in range(2)]
    blobs = [encode_clip(c, "jpeg", 90) for c in clips]
    out = decode_clips(blobs, (4, 32, 32, 3), torch.device("cpu"))  # (N, T, S, S, 3)
    assert out.shape == (2, 4, 32, 32, 3) and out.dtype == torch.uint8
    pil = torch.from_numpy(np.stack([decode_clip(b, "jpeg", (4, 32, 32, 3)) for b in blobs]))
    assert (out.int() - pil.int()).abs().max() <= 8 and (out.int() - pil.int()).abs().float().mean() < 1.0
    # frame t of clip i is frame t of clip i: the blue channel says which frame it is
    assert [int(out[1, t, ..., 2].float().mean().round()) // 10 for t in range(4)] == [0, 6, 12, 18]


def test_bad_blobs_and_sizes_are_refused():
    blob = encode_clip(np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="holds 2 frames, expected 3"):
        jpeg_parts(blob, 3)
    with pytest.raises(ValueError, match="truncated"):
        jpeg_parts(blob[:-10], 2)
    with pytest.raises(ValueError, match="not 32 x 32"):
        decode_clips([blob], (2, 32, 32, 3), torch.device("cpu"))
    assert not gpu_jpeg_available(torch.device("cpu"))


def test_batches_with_jpeg_blobs_are_decoded_by_the_worker_side_sender():
    """data.decode_on=worker: rows carry the blobs; the sender decodes them (here on the CPU) into frames."""
    from ncl_ray.train.transfer import Ahead

    rng = np.random.default_rng(1)
    clips = [rng.integers(0, 255, (2, 16, 16, 3), dtype=np.uint8) for _ in range(3)]
    blobs = [encode_clip(c) for c in clips]
    ahead = Ahead(torch.device("cpu"), frame_shape=(2, 16, 16, 3))
    batch = ahead.receive(ahead.send({"jpeg": blobs, "n_captions": torch.ones(3, dtype=torch.long)}))
    assert set(batch) == {"frames", "n_captions"} and ahead.decoder == "worker, CPU"
    expected = np.stack([decode_clip(b, "jpeg", (2, 16, 16, 3)) for b in blobs])
    assert torch.equal(batch["frames"], torch.from_numpy(expected))
