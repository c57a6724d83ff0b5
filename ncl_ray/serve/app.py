"""`ncl-ray serve RUN_OR_CHECKPOINT [--host 127.0.0.1] [--port 8000] [key=value ...]`: text-to-video search on
Ray Serve.

Deployments: `TextEncoder` (the checkpoint's text tower, requests batched with `serve.batch`), `Gallery` (the
faiss index of `index.GalleryIndex`, NCL folded in) and `Api` (FastAPI ingress):
    GET  /search?q=...&k=10&method=ncl|none|nnn|is|csls  -> [{video_id, score, captions, thumbnail_url}]
         (nnn, is and csls when the index holds their biases: GET /healthz lists the index's methods)
    POST /search {"queries": [...], "k": 10, "method": "ncl"} -> [[...], ...]
    Videos cut into time windows (`ncl-ray index add --window`) come back once each, with their best moment
    (start_s, end_s) and up to MOMENTS moments; GET /videos/<video_id> streams the source file (by id, with byte
    ranges, so the page's player starts at a moment).
    GET  /healthz, GET /thumbnails/<video_id>.jpg[?start=&end=] (a strip of frames of the video or of one of
    its indexed moments), POST /reload (pick up a new index
    version written by `ncl-ray index add`), GET / (the search page).
Bad input gets a 4xx JSON error naming the field; only ids in the index are served, never paths from requests.
Every request first passes guard.py (Host allow-list, JSON-only POSTs, body size, the token when one is set);
API docs are off; responses carry a Content-Security-Policy and no-sniff/no-frame headers; caches are bounded.
"""

import io
from collections import OrderedDict
from typing import List, Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve

from ncl_ray.serve.explain import Explainer
from ncl_ray.serve.guard import LOOPBACK_HOSTS, check_request
from ncl_ray.serve.index import METHODS, GalleryIndex
from ncl_ray.serve.page import CSP, PAGE

MAX_QUERY_CHARS = 500
MAX_K = 100
MAX_QUERIES = 64
MAX_THUMBNAILS = 256  # strips kept in the Gallery replica (about 10 KB each)
MOMENTS = 3  # best moments listed per video cut into windows
api = FastAPI(title="ncl-ray search", docs_url=None, redoc_url=None, openapi_url=None)
GUARD = {"hosts": set(LOOPBACK_HOSTS), "token": ""}  # set by Api.__init__ in the replica that serves `api`
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
           "Referrer-Policy": "no-referrer"}


@api.middleware("http")
async def _guard(request: Request, call_next):
    headers = {k.lower(): v for k, v in request.headers.items()}
    problem = check_request(request.method, request.url.path, headers, GUARD["hosts"], GUARD["token"])
    response = _error(*problem) if problem else await call_next(request)
    response.headers.update(HEADERS)
    return response


@api.exception_handler(404)
async def _not_found(request: Request, exc) -> JSONResponse:
    return JSONResponse(status_code=404, content={"error": "no such page", "field": "path"})


@api.exception_handler(405)
async def _not_allowed(request: Request, exc) -> JSONResponse:
    return JSONResponse(status_code=405, content={"error": f"{request.method} is not allowed here", "field": "method"})


def _error(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, "field": field})


def validate(q, k, method) -> Optional[JSONResponse]:
    """None when the inputs are valid, else the 4xx response naming the field."""
    if not isinstance(q, str) or not q.strip():
        return _error(400, "q", "the query is empty")
    if len(q) > MAX_QUERY_CHARS:
        return _error(400, "q", f"the query is longer than {MAX_QUERY_CHARS} characters")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        return _error(400, "k", f"k must be an integer from 1 to {MAX_K}")
    if method not in METHODS:
        return _error(400, "method", f"method must be one of {', '.join(METHODS)}")
    return None


# max_ongoing_requests: Serve's default (5) would cap every batch at 5 and, under load, make the router reject
# and retry requests with backoff; replicas queue requests themselves instead.
@serve.deployment(max_ongoing_requests=64)
class TextEncoder:
    """The checkpoint's text tower; concurrent requests are encoded together."""

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


def training_captions(checkpoint: Optional[str]) -> Optional[np.ndarray]:
    """The checkpoint's training-caption bank (Q, D), for the page's coverage numbers; None without one."""
    if not checkpoint:
        return None
    from ncl_ray.runtime.checkpoint import load_checkpoint
    from ncl_ray.serve.manage import training_bank

    return training_bank(load_checkpoint(checkpoint)).queries.numpy()


@serve.deployment(max_ongoing_requests=64)
class Gallery:
    """The index, reloadable in place when a new version is written."""

    def __init__(self, folder: str, kind: str = "exact"):
        self.folder, self.kind = folder, kind
        self.thumbs: "OrderedDict[str, bytes]" = OrderedDict()  # least recently used first
        self.reload()

    def reload(self) -> dict:
        index = GalleryIndex.load(self.folder, self.kind)
        self.index, self.explainer = index, Explainer(index, training_captions(index.meta.get("checkpoint")))
        self.thumbs.clear()
        return self.info()

    def info(self) -> dict:
        return {"videos": len(self.index), "version": self.index.meta.get("version"), "kind": self.kind,
                "recall_at_10_vs_exact": self.index.recall_at_k, "split": self.index.meta.get("split"),
                "bank": self.index.meta.get("bank"), "methods": self.index.methods}

    def search(self, queries: List[np.ndarray], k: int, method: str):
        """Hits per query (one per video, best first; a video cut into windows also lists its best moments), or
        {"error": ...} for a method this index does not hold."""
        if method not in self.index.methods:
            return {"error": f"this index serves {', '.join(self.index.methods)}; {method} was not evaluated for it"}
        out = []
        for q, found in zip(queries, self.index.moments(np.stack(queries), k, method, per_video=MOMENTS)):
            hits, about = [], self.explainer.query(q)
            why = self.explainer.hits(q, [v["rows"][0][0] for v in found], method)
            for v, numbers in zip(found, why):
                hit = {"video_id": v["video_id"], "score": round(v["score"], 6),
                       "captions": self.index.captions.get(v["video_id"], [])[:5],
                       "thumbnail_url": f"/thumbnails/{v['video_id']}.jpg", "video_url": f"/videos/{v['video_id']}",
                       **numbers, **about}
                spans = [(float(self.index.spans[r][0]), float(self.index.spans[r][1]), sc) for r, sc in v["rows"]]
                if spans[0][1] > 0:  # a moment: the best window's time range, its thumbnail, the others
                    a, b, _ = spans[0]
                    hit.update(start_s=a, end_s=b, thumbnail_url=f"/thumbnails/{v['video_id']}.jpg?start={a}&end={b}",
                               moments=[{"start_s": x, "end_s": y, "score": round(z, 6)} for x, y, z in spans])
                hits.append(hit)
            out.append(hits)
        return out

    def _span_ok(self, video_id: str, start: float, end: float) -> bool:
        """Only the time windows the index holds for this video are decoded (never times from a request)."""
        return any(abs(self.index.spans[i][0] - start) < 1e-3 and abs(self.index.spans[i][1] - end) < 1e-3
                   for i in self.index.rows_of.get(video_id, []))

    def video_path(self, video_id: str) -> Optional[str]:
        row = self.index.row_of.get(video_id)
        return None if row is None else self.index.paths[row]

    def thumbnail(self, video_id: str, start: float = 0.0, end: float = 0.0) -> Optional[bytes]:
        """A strip of 4 frames of an indexed video, or of one of its indexed moments (decoded once, then kept);
        None for unknown ids or windows."""
        row = self.index.row_of.get(video_id)
        if row is None or (end > 0 and not self._span_ok(video_id, start, end)):
            return None
        key = f"{video_id}@{start:.3f}-{end:.3f}"
        if key in self.thumbs:
            self.thumbs.move_to_end(key)
        else:
            from PIL import Image

            from ncl_ray.data.decode import DecodeError, decode_frames
            from ncl_ray.data.windows import decode_windows

            try:
                path = self.index.paths[row]
                frames = decode_windows(path, [(start, end)], 4, 96)[0] if end > 0 else decode_frames(path, 4, 96)
                strip = np.concatenate(list(frames), axis=1)  # (96, 384, 3)
            except DecodeError:
                strip = np.full((96, 384, 3), 40, np.uint8)  # the video went away: a gray strip
            buf = io.BytesIO()
            Image.fromarray(strip).save(buf, format="JPEG", quality=85)
            self.thumbs[key] = buf.getvalue()
            while len(self.thumbs) > MAX_THUMBNAILS:
                self.thumbs.popitem(last=False)
        return self.thumbs[key]


@serve.deployment(max_ongoing_requests=256)
@serve.ingress(api)
class Api:
    def __init__(self, encoder, gallery, hosts: Optional[List[str]] = None, token: str = ""):
        self.encoder, self.gallery = encoder, gallery
        GUARD["hosts"] = set(hosts) if hosts else set(LOOPBACK_HOSTS)
        GUARD["token"] = token

    @api.get("/", response_class=HTMLResponse)
    async def page(self):
        return PAGE

    @api.get("/healthz")
    async def healthz(self):
        return {"status": "ok", **(await self.gallery.info.remote())}

    async def _search(self, queries: List[str], k, method):
        vectors = [await self.encoder.encode.remote(q) for q in queries]
        hits = await self.gallery.search.remote(vectors, k, method)
        return _error(400, "method", hits["error"]) if isinstance(hits, dict) else hits

    @api.get("/search")
    async def search_get(self, request: Request):
        p = request.query_params
        q, method, k_text = p.get("q", ""), p.get("method", "ncl"), p.get("k", "10")
        try:
            k = int(k_text)
        except ValueError:
            return _error(400, "k", f"k must be an integer from 1 to {MAX_K}, got {k_text[:20]!r}")
        bad = validate(q, k, method)
        if bad is not None:
            return bad
        hits = await self._search([q], k, method)
        return hits if isinstance(hits, JSONResponse) else hits[0]

    @api.post("/search")
    async def search_post(self, request: Request):
        try:
            body = await request.json()
        except Exception:
            return _error(400, "body", "the body must be JSON: {\"queries\": [...], \"k\": 10, \"method\": \"ncl\"}")
        if not isinstance(body, dict):
            return _error(400, "body", "the body must be a JSON object")
        queries, k, method = body.get("queries"), body.get("k", 10), body.get("method", "ncl")
        if not isinstance(queries, list) or not queries or len(queries) > MAX_QUERIES:
            return _error(400, "queries", f"queries must be a list of 1 to {MAX_QUERIES} strings")
        for q in queries:
            bad = validate(q, k, method)
            if bad is not None:
                return bad
        return await self._search(queries, k, method)

    @api.get("/thumbnails/{name}")
    async def thumbnail(self, name: str, request: Request):
        if not name.endswith(".jpg"):
            return _error(404, "video_id", "thumbnails are /thumbnails/<video_id>.jpg")
        try:
            start, end = (float(request.query_params.get(k, "0")) for k in ("start", "end"))
        except ValueError:
            return _error(400, "start", "start and end are seconds, as the search results give them")
        data = await self.gallery.thumbnail.remote(name[: -len(".jpg")], start, end)
        if data is None:
            return _error(404, "video_id", "no such video or moment in the index")
        return Response(content=data, media_type="image/jpeg")

    @api.get("/videos/{video_id}")
    async def video(self, video_id: str):
        """The source file of an indexed video, by id (never by path), with byte ranges so players can seek."""
        import mimetypes
        import os

        from fastapi.responses import FileResponse

        path = await self.gallery.video_path.remote(video_id)
        if path is None or not os.path.isfile(path):
            return _error(404, "video_id", "no such video in the index")
        return FileResponse(path, media_type=mimetypes.guess_type(path)[0] or "application/octet-stream")

    @api.post("/reload")
    async def reload(self):
        return await self.gallery.reload.remote()


def build_app(checkpoint: str, index_folder: str, kind: str = "exact", replicas: int = 1, use_gpu: bool = False,
              hosts: Optional[List[str]] = None, token: str = ""):
    encoder = TextEncoder.options(num_replicas=replicas, ray_actor_options={"num_gpus": 1 if use_gpu else 0,
                                                                           "num_cpus": 0.5}).bind(checkpoint, use_gpu)
    gallery = Gallery.options(ray_actor_options={"num_cpus": 0.5}).bind(index_folder, kind)
    return Api.options(ray_actor_options={"num_cpus": 0.1}).bind(encoder, gallery, sorted(hosts or LOOPBACK_HOSTS),
                                                                token)
