"""`ncl-ray serve RUN_OR_CHECKPOINT [--host 127.0.0.1] [--port 8000] [key=value ...]`: text-to-video search on
Ray Serve.

Deployments: `TextEncoder` (the checkpoint's text tower, requests batched with `serve.batch`), `Gallery` (the
faiss index of `index.GalleryIndex`, NCL folded in) and `Api` (FastAPI ingress):
    GET  /search?q=...&k=10&method=ncl|none|nnn|is|csls  -> [{video_id, score, captions, thumbnail_url}]
         (nnn, is and csls when the index holds their biases: GET /healthz lists the index's methods)
    POST /search {"queries": [...], "k": 10, "method": "ncl"} -> [[...], ...]
    GET  /search?like=VIDEO_ID[&start=S]&k=10&method=ncl -> videos and moments like an indexed one (or its moment
         at S seconds), itself first
    POST /search/image?k=10&method=ncl with a JPEG or PNG body -> the hits of that image (the frame tower)
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

import os
from typing import List, Optional, Tuple

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from ray import serve

from ncl_ray.serve.deployments import Gallery, TextEncoder
from ncl_ray.serve.filters import FilterError, Filters, check_not, parse_filters
from ncl_ray.serve.files import FileChanged, FileGone, open_indexed, parse_range, read_span
from ncl_ray.serve.guard import LOOPBACK_HOSTS, MAX_IMAGE_BODY, RequestError, check_request, repeated_header
from ncl_ray.serve.index import METHODS, without
from ncl_ray.serve.page import CSP, PAGE

MAX_QUERY_CHARS = 500
MAX_K = 100
MAX_QUERIES = 64


class FiniteJSONResponse(JSONResponse):
    """JSON that can never hold NaN or infinity (which `json` would write as bare NaN, not JSON): such a body
    is a 500 naming the problem, never numbers a client would misread."""

    def render(self, content) -> bytes:
        import json

        try:
            return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        except ValueError:
            self.status_code = 500
            return b'{"error":"a score was not a finite number","field":"index"}'


api = FastAPI(title="ncl-ray search", docs_url=None, redoc_url=None, openapi_url=None,
              default_response_class=FiniteJSONResponse)
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
           "Referrer-Policy": "no-referrer"}


@api.middleware("http")
async def _guard(request: Request, call_next):
    """Every request, every path. The settings are the replica's own (`Api.__serve_build_asgi_app__` puts
    them on the running app's state); without them nothing is served (fail closed)."""
    guard = getattr(request.app.state, "guard", None)
    twice = repeated_header(request.headers.keys())  # keys() keeps repeats
    headers = {k.lower(): v for k, v in request.headers.items()}
    if guard is None:
        problem = (503, "server", "the request guard is not configured")
    elif twice:
        problem = (400, twice, f"the {twice} header is given more than once")
    else:
        problem = check_request(request.method, request.url.path, headers, guard["hosts"], guard["token"])
    response = _error(*problem) if problem else await call_next(request)
    response.headers.update(HEADERS)
    return response


@api.exception_handler(RequestError)
async def _refused(request: Request, e: RequestError):
    """The one place a refusal becomes a response: raised in a handler or in a deployment (Ray re-raises it
    here as an instance of RequestError that reads the original's fields)."""
    return _error(e.status, e.field, e.message)


@api.exception_handler(404)
async def _not_found(request: Request, exc) -> JSONResponse:
    return JSONResponse(status_code=404, content={"error": "no such page", "field": "path"})


@api.exception_handler(405)
async def _not_allowed(request: Request, exc) -> JSONResponse:
    return JSONResponse(status_code=405, content={"error": f"{request.method} is not allowed here", "field": "method"})


def _error(status: int, field: str, message: str) -> JSONResponse:
    return FiniteJSONResponse(status_code=status, content={"error": message, "field": field})


def _narrowing(get, negative) -> Tuple[Optional[Filters], Optional[JSONResponse]]:
    """A request's filters (path, min_s, max_s, added_after) and its negative phrase checked: (filters, None),
    or (None, the 400 naming the field that is wrong)."""
    try:
        filters = parse_filters(get)
        check_not(negative, MAX_QUERY_CHARS)
    except FilterError as e:
        return None, _error(400, e.field, e.message)
    return filters, None


def _file_error(status: int) -> JSONResponse:
    """404/409 for a video's file, saying nothing of where it is."""
    if status == 409:
        return _error(409, "video_id", "the video's file is no longer the one that was indexed (re-add it)")
    return _error(404, "video_id", "no such video or moment in the index")


def query_k(params) -> int:
    """`k` of a query string as an integer (its range is validate's); RequestError 400 naming it otherwise."""
    text = params.get("k", "10")
    try:
        return int(text)
    except ValueError:
        raise RequestError(400, "k", f"k must be an integer from 1 to {MAX_K}, got {text[:20]!r}") from None


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


@serve.deployment(max_ongoing_requests=256)
@serve.ingress(api)
class Api:
    def __init__(self, encoder, gallery, hosts: Optional[List[str]] = None, token: str = ""):
        self.encoder, self.gallery = encoder, gallery
        self.guard = {"hosts": set(hosts) if hosts else set(LOOPBACK_HOSTS), "token": token}

    def __serve_build_asgi_app__(self):
        """Serve calls this in the replica, after __init__: the guard's settings go onto the app this replica
        runs. A module global would not do: Ray ships this class by value, so a global written here is a copy
        that the middleware never reads (the token was ignored that way)."""
        self.app.state.guard = self.guard
        return self.app

    @api.get("/", response_class=HTMLResponse)
    async def page(self):
        return PAGE

    @api.get("/healthz")
    async def healthz(self):
        return {"status": "ok", **(await self.gallery.info.remote())}

    async def _search(self, queries: List[str], k, method, explain: bool = True, negative: Optional[str] = None,
                      filters: Optional[Filters] = None, folded: bool = False):
        vectors = [await self.encoder.encode.remote(q) for q in queries]
        if negative:  # "but not": rows like the phrase lowered inside the index search (index.without)
            vectors = list(without(np.stack(vectors), await self.encoder.encode.remote(negative)))
        return await self.gallery.search.remote(vectors, k, method, explain, filters, folded)

    @api.get("/search")
    async def search_get(self, request: Request):
        p = request.query_params
        q, method, k = p.get("q", ""), p.get("method", "ncl"), query_k(p)
        explain, negative, folded = p.get("explain", "1"), p.get("not"), p.get("collapse", "0")
        if explain not in ("0", "1"):
            return _error(400, "explain", "explain is 1 (each hit's plain score, bias, rank and confidence) or 0")
        if folded not in ("0", "1"):
            return _error(400, "collapse", "collapse is 1 (near-copies shown as 'also in' the hit above) or 0")
        filters, bad = _narrowing(p.get, negative)
        if bad is not None:
            return bad
        if "like" in p:  # more like this: an indexed video (or one of its moments) is the query
            return await self._like(p.get("like", ""), p.get("start"), k, method)
        bad = validate(q, k, method)
        if bad is not None:
            return bad
        hits = await self._search([q], k, method, explain == "1", negative, filters, folded == "1")
        return hits if isinstance(hits, JSONResponse) else hits[0]

    async def _like(self, video_id: str, start_text: Optional[str], k, method):
        bad = validate("like", k, method)
        if bad is not None:
            return bad
        if not video_id or len(video_id) > MAX_QUERY_CHARS:
            return _error(400, "like", "like names an indexed video id")
        try:
            start = None if start_text is None else float(start_text)
        except ValueError:
            return _error(400, "start", "start is seconds, as the search results give them")
        if start is not None and not (0 <= start < 1e7):
            return _error(400, "start", "start is seconds from 0")
        return await self.gallery.like.remote(video_id, start, k, method)

    @api.post("/search")
    async def search_post(self, request: Request):
        try:
            body = await request.json()
        except Exception:
            return _error(400, "body", "the body must be JSON: {\"queries\": [...], \"k\": 10, \"method\": \"ncl\"}")
        if not isinstance(body, dict):
            return _error(400, "body", "the body must be a JSON object")
        queries, k, method = body.get("queries"), body.get("k", 10), body.get("method", "ncl")
        explain, negative = body.get("explain", True), body.get("not")
        if not isinstance(explain, bool):
            return _error(400, "explain", "explain is true (each hit's plain score, bias, rank, confidence) or false")
        filters, bad = _narrowing(body.get, negative)
        if bad is not None:
            return bad
        if not isinstance(queries, list) or not queries or len(queries) > MAX_QUERIES:
            return _error(400, "queries", f"queries must be a list of 1 to {MAX_QUERIES} strings")
        for q in queries:
            bad = validate(q, k, method)
            if bad is not None:
                return bad
        return await self._search(queries, k, method, explain, negative, filters)

    @api.post("/search/image")
    async def search_image(self, request: Request):
        """The image in the body (JPEG or PNG, bounded by the guard and image_query.py) is the query."""
        p = request.query_params
        method, k = p.get("method", "ncl"), query_k(p)
        bad = validate("image", k, method)
        if bad is not None:
            return bad
        data = await request.body()
        if len(data) > MAX_IMAGE_BODY:  # more than it declared
            return _error(413, "body", f"the body is larger than {MAX_IMAGE_BODY} bytes")
        vector = await self.encoder.encode_image.remote(data)
        return (await self.gallery.search.remote([vector], k, method))[0]

    @api.get("/thumbnails/{name}")
    async def thumbnail(self, name: str, request: Request):
        if not name.endswith(".jpg"):
            return _error(404, "video_id", "thumbnails are /thumbnails/<video_id>.jpg")
        try:
            start, end = (float(request.query_params.get(k, "0")) for k in ("start", "end"))
        except ValueError:
            return _error(400, "start", "start and end are seconds, as the search results give them")
        status, data = await self.gallery.thumbnail.remote(name[: -len(".jpg")], start, end)
        if status != 200:
            return _file_error(status)
        return Response(content=data, media_type="image/jpeg")

    @api.get("/videos/{video_id}")
    async def video(self, video_id: str, request: Request):
        """The source file of an indexed video, by id (never by path), with a byte range so players can seek;
        only the very file that was indexed (files.open_indexed), else 404 or 409 naming nothing on disk."""
        import mimetypes

        found = await self.gallery.video_file.remote(video_id)
        if found is None:
            return _file_error(404)
        path, identity = found
        try:
            fd = open_indexed(path, identity)
        except FileGone:
            return _file_error(404)
        except FileChanged:
            return _file_error(409)
        size = os.fstat(fd).st_size
        try:
            span = parse_range(request.headers.get("range"), size)
        except ValueError as e:
            os.close(fd)
            return FiniteJSONResponse(status_code=416, content={"error": str(e), "field": "range"},
                                      headers={"Content-Range": f"bytes */{size}"})
        first, last = span if span else (0, size - 1)
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(max(0, last - first + 1))}
        if span:
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        return StreamingResponse(read_span(fd, first, last), status_code=206 if span else 200, headers=headers,
                                 media_type=mimetypes.guess_type(path)[0] or "application/octet-stream")

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
