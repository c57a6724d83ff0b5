"""The served gallery: NCL biases folded into the video embeddings, in a faiss inner-product index. No Ray.

    index = GalleryIndex.load("runs/NAME/best/eval/test-bank-train/export", kind="exact")
    scores, rows = index.search(text_embeddings, k=10, method="ncl")   # (R, k), (R, k)

`ncl` searches the folded gallery [v_j, tau * b_j] with queries [t_i, 1]: t.v + tau b_j = tau (s/tau + b_j), the
ranking of `ncl-ray eval`'s ncl scorer; nnn, is and csls, when the index holds their biases, fold the same way.
`none` searches the plain embeddings. `kind="hnsw"` builds an approximate
HNSW index for large galleries; its recall@k against the exact index is measured on build (`recall_at_k`).
A versioned index folder holds `CURRENT` (the name of the live version) and `v0001/`, `v0002/`, ...; an export
folder (videos.parquet, texts.parquet, index.json) is one version by itself.
"""

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ncl_ray.evaluation.export import read_index
from ncl_ray.ncl.fold import fold_gallery, fold_queries
from ncl_ray.ncl.methods import SERVED_METHODS
from ncl_ray.serve.copies import collapse, copy_cosine
from ncl_ray.runtime import storage

METHODS = SERVED_METHODS
KINDS = ("exact", "hnsw")
MOMENTS = 3  # best moments listed per video cut into windows
NOT_WEIGHT = 0.5  # a negative phrase lowers each row's score by this times its similarity to the phrase
def without(queries: np.ndarray, negative: np.ndarray, weight: float = NOT_WEIGHT) -> np.ndarray:
    """The query of "QUERY but not PHRASE": queries (R, D) minus weight x the phrase's embedding (D,) or (R, D). An
    inner product is linear, so every row's score drops by weight x its similarity to the phrase, inside the
    index's own search (the folded bias column is untouched: fold_queries appends its 1 after this)."""
    return np.asarray(queries, np.float32) - np.float32(weight) * np.asarray(negative, np.float32)


def current_name(folder: str) -> str:
    """The version a versioned index folder's CURRENT names ("" for an export folder): one small read, so a
    server can look for a new version often."""
    if storage.is_uri(folder):
        live = storage.join(folder, "CURRENT")
        return storage.read_text(live).strip() if storage.stat(live)[0] >= 0 else ""
    live = Path(folder) / "CURRENT"
    return live.read_text().strip() if live.is_file() else ""


def resolve_version(folder: str) -> Path:
    """An export folder itself, or the version that a versioned folder's CURRENT names; on object storage
    (s3://...), the local copy of that export or version (fetched once, reused while unchanged)."""
    if storage.is_uri(folder):
        live = storage.join(folder, "CURRENT")
        if storage.stat(live)[0] >= 0:  # a versioned index: only the version CURRENT names is fetched
            return Path(storage.fetch(storage.join(folder, storage.read_text(live).strip())))
        folder = storage.fetch(folder)
    d = Path(folder)
    if (d / "CURRENT").is_file():
        return d / (d / "CURRENT").read_text().strip()
    if (d / "index.json").is_file():
        return d
    raise FileNotFoundError(f"not an ncl-ray index (no index.json or CURRENT): {folder}")


def selection(index, rows: np.ndarray):
    """faiss search parameters that restrict a search to `rows` (int64): a bitmap-free ID selector, HNSW's own
    parameters for an HNSW index (its efSearch kept)."""
    import faiss

    sel = faiss.IDSelectorBatch(rows)
    if isinstance(index, faiss.IndexHNSWFlat):
        return faiss.SearchParametersHNSW(sel=sel, efSearch=max(index.hnsw.efSearch, 1))
    return faiss.SearchParameters(sel=sel)


def _faiss_index(vectors: np.ndarray, kind: str):
    import faiss

    dim = vectors.shape[1]
    if kind == "exact":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 128
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


class GalleryIndex:
    def __init__(self, video_ids: List[str], paths: List[str], embeddings: np.ndarray, bias: np.ndarray,
                 temperature: float, captions: Dict[str, List[str]], meta: dict, kind: str = "exact",
                 hashes: Optional[List[str]] = None, extra: Optional[Dict[str, np.ndarray]] = None,
                 spans: Optional[np.ndarray] = None, identities: Optional[np.ndarray] = None):
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r} (choose from {', '.join(KINDS)})")
        self.video_ids, self.paths, self.meta, self.kind = list(video_ids), list(paths), meta, kind
        self.hashes = list(hashes) if hashes is not None else [""] * len(self.video_ids)  # file SHA-256s
        self.identities = np.full((len(self.video_ids), 4), -1, np.int64) if identities is None else \
            np.asarray(identities, np.int64).reshape(-1, 4)  # (C, 4) each file's identity when indexed
        self.rows_of: Dict[str, List[int]] = {}  # video_id -> its rows (one per window of a video cut into them)
        for i, v in enumerate(self.video_ids):
            self.rows_of.setdefault(v, []).append(i)
        self.row_of = {v: rows[0] for v, rows in self.rows_of.items()}  # video_id -> its first row
        self.spans = np.zeros((len(self.video_ids), 2), np.float32) if spans is None else \
            np.asarray(spans, np.float32).reshape(-1, 2)  # (C, 2) [start_s, end_s]; end_s 0 = the whole video
        self.captions, self.temperature = captions, float(temperature)
        self.plain = np.asarray(embeddings, np.float32)  # (C, D)
        self.biases = {"ncl": np.asarray(bias, np.float32),
                       **{m: np.asarray(b, np.float32) for m, b in (extra or {}).items()}}  # method -> (C,)
        self.indexes = {"none": _faiss_index(self.plain, kind)}
        for m, b in self.biases.items():  # each per-item method: its biases folded in, (C, D+1)
            self.indexes[m] = _faiss_index(fold_gallery(self.plain, b, self.temperature), kind)
        self.folded = fold_gallery(self.plain, bias, self.temperature)  # ncl's, for measure_recall
        self.methods = [m for m in METHODS if m in self.indexes]  # what this index can serve
        self.recall_at_k: Optional[float] = None
        self.durations = np.full(len(self.video_ids), np.nan, np.float32)  # (C,) its video's seconds; NaN unknown
        self.added = np.full(len(self.video_ids), np.nan)  # (C,) Unix time `index add` added it; NaN unknown

    @staticmethod
    def load(folder: str, kind: str = "exact") -> "GalleryIndex":
        d = resolve_version(folder)
        f = read_index(d)
        index = GalleryIndex(f.video_ids, f.paths, f.embeddings, f.bias, f.temperature, f.captions,
                             {**f.meta, "version": d.name}, kind, f.hashes, f.extra, f.spans, f.identities)
        index.durations, index.added = f.durations, f.added
        if kind != "exact":
            index.recall_at_k = index.measure_recall()
        return index

    def __len__(self) -> int:
        """Rows: a video cut into windows has one per window (`n_videos` counts videos)."""
        return len(self.video_ids)

    @property
    def n_videos(self) -> int:
        return len(self.rows_of)

    def search(self, queries: np.ndarray, k: int, method: str = "ncl",
               allowed: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """queries (R, D) unit text embeddings -> scores (R, k), gallery rows (R, k), best first; with `allowed`
        (sorted row numbers: a filter's), only those rows, inside faiss's own search (an ID selector), so k
        allowed rows come back whenever k exist.

        Scores: a per-item method's = tau * (s / tau + b_j) (the folded inner product), none = cosine similarity."""
        if method not in self.methods:
            raise ValueError(f"method {method!r} is not in this index (it serves {', '.join(self.methods)}; "
                             f"evaluate with eval.methods listing it to serve it)")
        q = np.asarray(queries, np.float32)
        if method != "none":
            q = fold_queries(q)  # (R, D+1)
        if allowed is None:
            return self.indexes[method].search(np.ascontiguousarray(q), min(k, len(self)))
        if not len(allowed):
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        params = selection(self.indexes[method], np.asarray(allowed, np.int64))
        # an HNSW walk may find fewer than asked among very few allowed rows: those come back as row -1
        return self.indexes[method].search(np.ascontiguousarray(q), min(k, len(allowed)), params=params)

    def moments(self, queries: np.ndarray, k: int, method: str = "ncl", per_video: int = 1,
                allowed: Optional[np.ndarray] = None) -> List[List[Dict]]:
        """Per query, the k best videos, best first, each with its `per_video` best rows (moments when the video
        is cut into windows): [{video_id, score, rows: [(row, score), ...]}]; only `allowed` rows when given."""
        n = len(self) if allowed is None else len(allowed)
        videos = len(self.row_of) if allowed is None else len({self.video_ids[r] for r in allowed})
        want = min(n, max(k * per_video * 4, k))
        while True:
            scores, rows = self.search(queries, want, method, allowed)
            out = [_group(self.video_ids, srow, rrow, k, per_video) for srow, rrow in zip(scores, rows)]
            if want >= n or all(len(o) >= min(k, videos) for o in out):
                return out
            want = min(n, want * 4)  # windows of a few videos filled the first rows: look further

    def hits(self, queries: np.ndarray, k: int, method: str = "ncl", per_video: int = MOMENTS,
             allowed: Optional[np.ndarray] = None, folded: bool = False) -> List[List[Dict]]:
        """Per query (R, D), one hit per video, best first: video_id, path, score, captions, its best row; a video
        cut into windows also has its best window (start_s, end_s) and up to `per_video` moments. What the
        server and `ncl-ray search` both show. With `folded`, near-copies are folded into the hit above them
        (`collapse`), from twice k candidates."""
        want, videos = (2 * k if folded else k), len(self.row_of) if allowed is None else len(allowed)
        while True:
            out = [[self._hit(v) for v in found]
                   for found in self.moments(queries, want, method, per_video=per_video, allowed=allowed)]
            if not folded:
                return out
            kept = [collapse(hits, self.plain, k, self.copy_cosine()) for hits in out]
            if want >= videos or all(len(h) >= k for h in kept):
                return kept
            want *= 4  # copies filled the candidates: look further

    def copy_cosine(self) -> float:
        """The cosine from which two rows of different videos are copies (copies.copy_cosine), once per index."""
        if getattr(self, "_copy", None) is None:
            self._copy = copy_cosine(self.plain, self.rows_of)
        return self._copy

    def _hit(self, v: Dict) -> Dict:
        """One grouped video of `moments` as a hit (see `hits`)."""
        best = v["rows"][0][0]
        hit = {"video_id": v["video_id"], "path": self.paths[best], "score": round(v["score"], 6),
               "captions": self.captions.get(v["video_id"], []), "row": best}
        spans = [(float(self.spans[r][0]), float(self.spans[r][1]), sc) for r, sc in v["rows"]]
        if spans[0][1] > 0:  # a moment: the best window's time range, and the others
            hit.update(start_s=spans[0][0], end_s=spans[0][1],
                       moments=[{"start_s": a, "end_s": b, "score": round(z, 6)} for a, b, z in spans])
        return hit

    def like_vector(self, video_id: str, start: Optional[float] = None) -> np.ndarray:
        """The query for "more like this" (D,): the indexed video's embedding; for a video cut into windows, the
        window holding `start` (seconds), or without `start` its windows' mean direction. KeyError: not indexed;
        ValueError: no window holds `start`."""
        rows = self.rows_of[video_id]
        if start is not None and self.spans[rows[0]][1] > 0:
            rows = [r for r in rows if self.spans[r][0] <= start < self.spans[r][1]]
            if not rows:
                raise ValueError(f"no indexed moment of {video_id} holds {start} s")
            rows = rows[:1]
        v = self.plain[rows].mean(axis=0)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    def like(self, video_id: str, k: int, method: str = "ncl", start: Optional[float] = None) -> List[Dict]:
        """Videos and moments like an indexed one, itself first (the reference the others are like)."""
        return self.like_from(video_id, self.like_vector(video_id, start), k, method)

    def like_from(self, video_id: str, q: np.ndarray, k: int, method: str) -> List[Dict]:
        """`like` for its query vector q (D,), already made by `like_vector`."""
        hits = self.hits(q[None], k + 1, method)[0]
        own = [h for h in hits if h["video_id"] == video_id]
        if not own:  # a method's bias may push it down: it still leads, as the reference
            own = [h for h in self.hits(q[None], len(self.row_of), method)[0] if h["video_id"] == video_id]
        return (own + [h for h in hits if h["video_id"] != video_id])[:k]

    def measure_recall(self, n_queries: int = 200, k: int = 10, seed: int = 0) -> float:
        """recall@k of this (approximate) index against an exact one, for random gallery-like queries."""
        g = np.random.default_rng(seed)
        rows = g.choice(len(self), size=min(n_queries, len(self)), replace=False)
        q = self.plain[rows] + 0.05 * g.normal(size=self.plain[rows].shape).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        q1 = fold_queries(q)
        exact = _faiss_index(self.folded, "exact").search(q1, k)[1]
        approx = self.indexes["ncl"].search(q1, k)[1]
        return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx, exact)]))


def _group(video_ids: List[str], scores: np.ndarray, rows: np.ndarray, k: int, per_video: int) -> List[Dict]:
    """Ranked rows -> ranked videos with their best rows (the first row of a video is its best)."""
    videos: Dict[str, Dict] = {}
    for s, r in zip(scores.tolist(), rows.tolist()):
        if r < 0:
            continue
        v = video_ids[r]
        if v not in videos:
            if len(videos) == k:
                continue
            videos[v] = {"video_id": v, "score": float(s), "rows": []}
        if len(videos[v]["rows"]) < per_video:
            videos[v]["rows"].append((r, float(s)))
    return list(videos.values())


def search_texts(folder, queries: List[str], top_k: int = 5, method: str = "ncl", negative: Optional[str] = None,
                 filters=None) -> List[List[Dict]]:
    """`GalleryIndex.hits` for text queries, embedded with the index's checkpoint (a folder, or a loaded index);
    with a `negative` phrase, the rows like it are lowered (`without`); with `filters` (serve/filters.py), only
    the rows that pass."""
    import torch

    from ncl_ray.data.captions import tokenize
    from ncl_ray.runtime.checkpoint import load_model

    index = folder if isinstance(folder, GalleryIndex) else GalleryIndex.load(folder)
    model, cfg, _ = load_model(index.meta["checkpoint"])
    with torch.no_grad():
        text = model.encode_text(torch.from_numpy(tokenize(queries + ([negative] if negative else []),
                                                           cfg.data.max_words))).numpy()  # (R [+ 1], D)
    if negative:
        text = without(text[:-1], text[-1])
    return index.hits(text, top_k, method, allowed=None if filters is None else filters.rows(index))
