"""Moments inside a long video, without Ray: a 2-minute video joined from three 40-second scenes is cut into
10-second windows and embedded with the index's own embedder; each scene, used as the query, finds the long
video at a moment inside that scene's own time range. (A model that tells the scenes apart: any model maps a
window to nearly the embedding of the scene it lies in, since the frames are the same.)"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ncl_ray.config.schema import load_config, to_dict
from ncl_ray.data.synthetic import render, write_video
from ncl_ray.model.clip import ModelSpec, build_model
from ncl_ray.ncl.loss import NCLLoss
from ncl_ray.runtime.checkpoint import save_checkpoint
from ncl_ray.serve.add import VideoEmbedder
from ncl_ray.serve.index import GalleryIndex

SCENES = [("red", "circle", "large", "right", "black"), ("green", "square", "small", "up", "gray"),
          ("yellow", "bar", "large", "left", "navy")]
FPS, SECONDS = 2, 40  # 80 frames a scene


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("moments")
    torch.manual_seed(0)
    cfg = load_config(None, ["model.embed_dim=32", "data.frame_size=32", "data.num_frames=4", "data.max_words=16"])
    ckpt = save_checkpoint(str(tmp / "ckpt"), build_model(ModelSpec("tiny", "", "meanP", 32, 16, embed_dim=32)),
                           NCLLoss(32, 4, 1), 0, 1, to_dict(cfg))
    scenes = [render(*s, num_frames=FPS * SECONDS, side=64, rng=np.random.default_rng(i)) for i, s in enumerate(SCENES)]
    paths = [write_video(str(tmp / f"scene{i}.mp4"), f, fps=FPS) for i, f in enumerate(scenes)]
    joined = write_video(str(tmp / "joined.mp4"), np.concatenate(scenes), fps=FPS)
    return ckpt, paths, joined


def test_each_scene_finds_the_long_video_inside_its_own_time_range(long_video):
    ckpt, scene_paths, joined = long_video
    windows = VideoEmbedder(ckpt, window_s=10.0, stride_s=5.0)({"video_id": np.array(["long"], dtype=object),
                                                                 "path": np.array([joined], dtype=object)})
    assert not any(windows["error"]) and len(windows["video_id"]) == 23  # 0-10, 5-15, ..., 110-120
    spans = np.stack([windows["start_s"], windows["end_s"]], 1)
    assert spans[0].tolist() == [0.0, 10.0] and spans[-1].tolist() == pytest.approx([110.0, 120.0], abs=0.6)
    whole = VideoEmbedder(ckpt)({"video_id": np.array(["s0", "s1", "s2"], dtype=object),
                                 "path": np.array(scene_paths, dtype=object)})
    assert whole["end_s"].tolist() == [0.0, 0.0, 0.0]  # whole videos: no window
    gallery = windows["embedding"]  # (23, D)
    index = GalleryIndex(list(windows["video_id"]), [joined] * 23, gallery, np.zeros(23), 0.05, {}, {},
                         spans=spans)
    for k in range(3):
        query = F.normalize(torch.from_numpy(whole["embedding"][k:k + 1]), dim=1).numpy()
        found = index.moments(query, k=1, method="none", per_video=3)[0]
        assert [v["video_id"] for v in found] == ["long"] and len(found[0]["rows"]) == 3
        start, end = index.spans[found[0]["rows"][0][0]]
        assert SECONDS * k <= start and end <= SECONDS * (k + 1), (k, start, end)


def test_moments_group_windows_per_video_best_first():
    emb = np.eye(4, dtype=np.float32)[[0, 0, 1, 2]] + 0.01  # rows 0, 1: video a; 2: b; 3: c
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = GalleryIndex(["a", "a", "b", "c"], ["/a", "/a", "/b", "/c"], emb, np.zeros(4), 0.05, {}, {},
                         spans=np.array([[0, 10], [5, 15], [0, 0], [0, 0]], np.float32))
    q = np.array([[0.9, 0.3, 0.1, 0.0]], np.float32)
    found = index.moments(q / np.linalg.norm(q), k=2, method="none", per_video=2)[0]
    assert [v["video_id"] for v in found] == ["a", "b"] and len(found[0]["rows"]) == 2
