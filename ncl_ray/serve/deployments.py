"""The two inner deployments of the search service (app.py is its HTTP ingress): `TextEncoder`, the checkpoint's
text tower with requests batched by `serve.batch`, and `Gallery`, the served index (index.GalleryIndex, every
per-item method folded in), reloadable in place, with the thumbnails of the files that were indexed.

Their settings arrive as constructor arguments (`bind()`), never through module globals.
"""

import io
import logging
import os
import time
from collections import OrderedDict
from typing import List, Optional, Tuple

import numpy as np
from ray import serve

from ncl_ray.serve.explain import Explainer
from ncl_ray.serve.files import FileChanged, FileGone, open_indexed
from ncl_ray.serve.guard import RequestError
from ncl_ray.serve.index import GalleryIndex, current_name

MAX_THUMBNAILS = 256  # strips kept in the Gallery replica (about 10 KB each)
FOLLOW_S = 5.0  # a new index version is served within this long of its CURRENT write, without POST /reload
log = logging.getLogger("ncl_ray.serve")


# max_ongoing_requests: Serve's default (5) would cap every batch at 5 and, under load, make the router reject
# and retry requests with backoff; replicas queue requests themselves instead.
@serve.deployment(max_ongoing_requests=64)
class TextEncoder:
    """The checkpoint's text tower (concurrent requests are encoded together), and its frame tower for image
    queries."""

    def __init__(self, checkpoint: str, use_gpu: bool = False):
        import torch

        from ncl_ray.runtime.checkpoint import load_model

        self.model, self.cfg, _ = load_model(checkpoint)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def encode(self, texts: List[str]) -> List[np.ndarray]:
        import torch

        from ncl_ray.data.captions import tokenize

        with torch.no_grad():
            tokens = torch.from_numpy(tokenize(list(texts), self.cfg.data.max_words)).to(self.device)
            out = self.model.encode_text(tokens).float().cpu().numpy()  # (R, D) unit norm
        return list(out)

    def encode_image(self, data: bytes) -> np.ndarray:
        """A JPEG or PNG query (image_query.py), embedded as a still clip; RequestError 400 for bad bytes."""
        from ncl_ray.serve.image_query import ImageError, embed_image, read_image

        try:
            rgb = read_image(data)
        except ImageError as e:
            raise RequestError(400, "image", str(e)) from None
        return embed_image(self.model, rgb, self.cfg.data.frame_size, self.cfg.data.num_frames, self.device)


def training_pairs(checkpoint: Optional[str]) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """The checkpoint's training captions (Q, D) and their videos (row by row, the queues' pairs), for the page's
    coverage and confidence numbers; (None, None) without them."""
    if not checkpoint:
        return None, None
    from ncl_ray.runtime.checkpoint import load_checkpoint
    from ncl_ray.serve.manage import training_bank

    bank = training_bank(load_checkpoint(checkpoint))
    videos = bank.videos.numpy() if bank.videos is not None and len(bank.videos) == len(bank.queries) else None
    return bank.queries.numpy(), videos


@serve.deployment(max_ongoing_requests=64)
class Gallery:
    """The index, reloadable in place when a new version is written: on POST /reload, and on its own within
    FOLLOW_S seconds of a new CURRENT (a version that fails its checks is named in the log once, and the one
    loaded keeps serving)."""

    def __init__(self, folder: str, kind: str = "exact"):
        self.folder, self.kind = folder, kind
        self.thumbs: "OrderedDict[str, bytes]" = OrderedDict()  # least recently used first
        self.checked, self.refused = time.monotonic(), ""
        self.reload()

    def follow(self) -> None:
        """Load a new current version if one was written since the last look (at most every FOLLOW_S)."""
        if time.monotonic() - self.checked < FOLLOW_S:
            return
        self.checked = time.monotonic()
        try:
            name = current_name(self.folder)
        except OSError as e:
            log.warning("cannot read the index's CURRENT (%s); %s still serves", e, self.index.meta.get("version"))
            return
        if name and name not in (self.index.meta.get("version"), self.refused):
            try:
                self.reload()
            except RequestError as e:
                self.refused = name
                log.warning("%s: %s", name, e.message)

    def reload(self) -> dict:
        """Load the current version; a version that fails its checks (export.check_index) or cannot be read is
        refused (RequestError 422) and the one already loaded keeps serving."""
        try:
            index = GalleryIndex.load(self.folder, self.kind)
        except (ValueError, OSError) as e:
            if not hasattr(self, "index"):
                raise
            raise RequestError(422, "index", f"version not loaded, {self.index.meta.get('version')} still serves: "
                                             f"{e}") from None
        captions, videos = training_pairs(index.meta.get("checkpoint"))
        self.index, self.explainer = index, Explainer(index, captions, bank_videos=videos)
        self.thumbs.clear()
        return self.info()

    def info(self) -> dict:
        self.follow()
        return {"videos": self.index.n_videos, "moments": len(self.index), "version": self.index.meta.get("version"),
                "kind": self.kind,
                "recall_at_10_vs_exact": self.index.recall_at_k, "split": self.index.meta.get("split"),
                "bank": self.index.meta.get("bank"), "methods": self.index.methods}

    def search(self, queries: List[np.ndarray], k: int, method: str, explain: bool = True, filters=None,
               folded: bool = False):
        """Hits per query (one per video, best first; a video cut into windows also lists its best moments), or
        RequestError 400 for a method this index does not hold; without `explain`, no explainer numbers; with
        `filters` (serve/filters.py), only the rows that pass, inside the index search; with `folded`,
        near-copies shown as "also in" the hit above them (index.collapse)."""
        self.follow()
        self._check_method(method)
        allowed = None if filters is None else filters.rows(self.index)
        hits = self.index.hits(np.stack(queries), k, method, allowed=allowed, folded=folded)  # as ncl-ray search
        return [self._shown(q, h, method, self.explainer.query(q) if explain else {}, explain)
                for q, h in zip(queries, hits)]

    def like(self, video_id: str, start: Optional[float], k: int, method: str):
        """Hits like an indexed video (or one of its moments), itself first; RequestError 404 for an id or a
        time the index does not hold."""
        self.follow()
        self._check_method(method)
        try:
            q = self.index.like_vector(video_id, start)
            hits = self.index.like_from(video_id, q, k, method)
        except KeyError:
            raise RequestError(404, "like", "no such video in the index") from None
        except ValueError as e:
            raise RequestError(404, "start", str(e)) from None
        return self._shown(q, hits, method, {})

    def _check_method(self, method: str) -> None:
        if method not in self.index.methods:
            raise RequestError(400, "method", f"this index serves {', '.join(self.index.methods)}; {method} was not "
                                              f"evaluated for it")

    def _shown(self, q: np.ndarray, hits: List[dict], method: str, about: dict, explain: bool = True) -> List[dict]:
        """Hits as the API returns them: ids, scores, captions, urls, the explainer's numbers (never paths)."""
        why = self.explainer.hits(q, [h["row"] for h in hits], method) if explain else [{} for _ in hits]
        shown = []
        for hit, numbers in zip(hits, why):
            vid, moment = hit["video_id"], {k: hit[k] for k in ("start_s", "end_s", "moments") if k in hit}
            shown.append({"video_id": vid, "score": hit["score"], "captions": hit["captions"][:5],
                          "thumbnail_url": f"/thumbnails/{vid}.jpg" + (
                              f"?start={hit['start_s']}&end={hit['end_s']}" if moment else ""),
                          "video_url": f"/videos/{vid}", **numbers, **about, **moment,
                          **({"also_in": hit["also_in"]} if "also_in" in hit else {})})
        return shown

    def _span_ok(self, video_id: str, start: float, end: float) -> bool:
        """Only the time windows the index holds for this video are decoded (never times from a request)."""
        return any(abs(self.index.spans[i][0] - start) < 1e-3 and abs(self.index.spans[i][1] - end) < 1e-3
                   for i in self.index.rows_of.get(video_id, []))

    def video_file(self, video_id: str) -> Optional[Tuple[str, List[int]]]:
        """(path, identity when indexed) of a video, or None for an unknown id."""
        row = self.index.row_of.get(video_id)
        return None if row is None else (self.index.paths[row], self.index.identities[row].tolist())

    def thumbnail(self, video_id: str, start: float = 0.0, end: float = 0.0) -> Tuple[int, bytes]:
        """(200, a strip of 4 frames of an indexed video or of one of its indexed moments as JPEG), decoded once
        from the file that was indexed and then kept; (404, b"") for unknown ids or windows or a file gone,
        (409, b"") for a file that is no longer the one indexed."""
        row = self.index.row_of.get(video_id)
        if row is None or (end > 0 and not self._span_ok(video_id, start, end)):
            return 404, b""
        if end <= 0:
            start = 0.0  # the whole video: one strip, whatever start a request gives
        key = f"{video_id}@{start:.3f}-{end:.3f}"
        if key in self.thumbs:
            self.thumbs.move_to_end(key)
            return 200, self.thumbs[key]
        from PIL import Image

        from ncl_ray.data.decode import DecodeError, decode_frames
        from ncl_ray.data.windows import decode_windows

        try:
            fd = open_indexed(self.index.paths[row], self.index.identities[row])
        except FileGone:
            return 404, b""
        except FileChanged:
            return 409, b""
        try:  # decoded through the open descriptor: the file checked, not whatever the path names by now
            path = f"/proc/self/fd/{fd}"
            frames = decode_windows(path, [(start, end)], 4, 96)[0] if end > 0 else decode_frames(path, 4, 96)
            strip = np.concatenate(list(frames), axis=1)  # (96, 384, 3)
        except DecodeError:
            strip = np.full((96, 384, 3), 40, np.uint8)  # undecodable after all: a gray strip
        finally:
            os.close(fd)
        buf = io.BytesIO()
        Image.fromarray(strip).save(buf, format="JPEG", quality=85)
        self.thumbs[key] = buf.getvalue()
        while len(self.thumbs) > MAX_THUMBNAILS:
            self.thumbs.popitem(last=False)
        return 200, self.thumbs[key]
