"""`ncl-ray index add RUN_OR_CHECKPOINT PATH_OR_MANIFEST [--replace]`: embed new videos with the trained model
and add them to the served gallery.

PATH_OR_MANIFEST is a video file, a folder of videos (ids = file names without extension) or a manifest
(CSV/JSONL). Captions, kept for display, come from the manifest, or for files from a sidecar `<name>.txt` beside
the video (one caption per line). An id already in the index is left as it is unless `--replace`; a file whose
bytes (SHA-256) equal a video already indexed, or another input's, is skipped and named. Videos are decoded with
the training decoder and embedded by a pool of model actors (Ray Data batch inference; a few videos on a private
instance in this process: serve.add_here); missing or corrupt ones are reported and skipped. The NCL gallery biases
depend on the whole gallery, so they are recomputed over the new gallery from the checkpoint's training-query bank;
the other served methods' biases (nnn, is, csls) depend on one video each and are computed for the new videos only.
The result is written as a new index version (atomically, with a changelog line); a running server picks it up with
POST /reload.
"""

import logging
import os
import stat
import time
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from ncl_ray.evaluation.export import IndexFiles
from ncl_ray.data.manifest import VIDEO_EXTENSIONS, VideoEntry, read_manifest
from ncl_ray.serve.add_here import embed_here, embeds_here
from ncl_ray.serve.guard import valid_video_id
from ncl_ray.serve.add_plan import changed_since_hashed, plan_additions
from ncl_ray.serve.manage import held_out_rows, new_biases, training_bank
from ncl_ray.serve.versions import MAX_CAPTION_CHARS, MAX_CAPTIONS

log = logging.getLogger("ncl_ray.index")
MAX_SIDECAR_BYTES = 64 * 1024
CHUNK = 16  # windows decoded and embedded at a time: 16 x 12 x 224 x 224 x 3 bytes = 29 MB of frames


def inside(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def checked_path(path: str, roots: Sequence[str], follow_links: bool) -> str:
    """The real path of an input file. A symbolic link anywhere in it is refused unless `follow_links`, and
    then only when it resolves inside `roots` (the folders named on the command line): an added folder must not
    bring in files from elsewhere (a caption file linked to /etc/passwd, a video linked out of the folder)."""
    real = os.path.realpath(path)
    if real != os.path.abspath(path):
        if not follow_links:
            raise LinkRefused(f"{path}: a symbolic link (pass --follow-links to accept links that stay inside "
                              f"the folders given)")
        if not inside(real, roots):
            raise LinkRefused(f"{path}: a symbolic link to a file outside {', '.join(roots)}")
    return real


class LinkRefused(ValueError):
    """An input reached through a link that may not be followed."""


def sidecar_captions(video: Path, roots: Sequence[str] = (), follow_links: bool = False) -> List[str]:
    """Captions from `<name>.txt` beside a video file: one per non-empty line (none when there is no file, or
    when it is a link that may not be followed, or not a regular file); at most MAX_CAPTIONS of
    MAX_CAPTION_CHARS each, read from its first MAX_SIDECAR_BYTES."""
    txt = video.with_suffix(".txt")
    if not txt.is_file() and not txt.is_symlink():
        return []
    try:
        real = checked_path(str(txt), roots or [os.path.realpath(video.parent)], follow_links)
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (LinkRefused, OSError) as e:
        log.warning("captions not read: %s", e)
        return []
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            log.warning("captions not read: %s is not a regular file", txt)
            return []
        text = f.read(MAX_SIDECAR_BYTES).decode(errors="replace")
    lines = [x.strip()[:MAX_CAPTION_CHARS] for x in text.splitlines() if x.strip()]
    if len(lines) > MAX_CAPTIONS:
        log.warning("%s: %d captions, keeping the first %d", txt, len(lines), MAX_CAPTIONS)
    return lines[:MAX_CAPTIONS]


def read_inputs(path: str, follow_links: bool = False) -> Tuple[List[VideoEntry], List[str]]:
    """(the videos to add, notes on inputs refused). Ids (file names without extension, or the manifest's) are
    checked: they are shown on the search page and in URLs, so only letters, digits, spaces and . , ( ) + - _
    are accepted, <= 128. Paths are real paths; links are refused (checked_path). Captions are cut to
    MAX_CAPTIONS of MAX_CAPTION_CHARS, from a manifest as from a sidecar."""
    p = Path(path)
    if p.suffix in (".csv", ".jsonl", ".json"):
        roots = [os.path.realpath(p.parent)]
        entries = read_manifest(str(p))
        for e in entries:
            e.captions = [c[:MAX_CAPTION_CHARS] for c in e.captions[:MAX_CAPTIONS]]
    elif p.is_dir():
        roots = [os.path.realpath(p)]
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_EXTENSIONS)
        if not files:
            raise FileNotFoundError(f"{path}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
        entries = [VideoEntry(f.stem, str(f.absolute()), "added", sidecar_captions(f, roots, follow_links))
                   for f in files]
    elif p.is_file():
        roots = [os.path.realpath(p.parent)]
        entries = [VideoEntry(p.stem, str(p.absolute()), "added", sidecar_captions(p, roots, follow_links))]
    else:
        raise FileNotFoundError(f"no such video, folder or manifest: {path}")
    bad = [e for e in entries if not valid_video_id(e.video_id)]
    if bad:
        raise ValueError(f"{path}: video id {bad[0].video_id[:80]!r} ({bad[0].path}) is not allowed: ids may hold "
                         f"letters, digits, spaces and . , ( ) + - _ only, at most 128 characters"
                         + (f" ({len(bad)} such ids)" if len(bad) > 1 else ""))
    kept, notes = [], []
    for e in entries:
        try:
            e.path = checked_path(e.path, roots, follow_links)
            kept.append(e)
        except LinkRefused as x:
            notes.append(f"{e.video_id}: {x}")
    return kept, notes


class VideoEmbedder:
    """Ray Data actor: decode each video like training did and embed it, whole or as time windows (one row per
    window, with start_s and end_s); failures come back as errors."""

    def __init__(self, checkpoint: str, window_s: float = 0.0, stride_s: float = 0.0):
        import torch

        from ncl_ray.runtime.checkpoint import load_model

        self.model, self.cfg, _ = load_model(checkpoint)
        self.torch, self.window_s, self.stride_s = torch, window_s, stride_s or window_s / 2

    def _chunks(self, path: str):
        """Yield (clips uint8 (w, T, S, S, 3), real frames per clip, spans [(start_s, end_s)]) at most CHUNK windows
        at a time, so memory stays bounded whatever the length; a video no longer than one window is one
        whole-video row (span (0, 0)), decoded as training decodes it. The plan comes from the packets the file
        really holds (windows.video_duration), never from its header alone."""
        from ncl_ray.data.decode import decode_video
        from ncl_ray.data.limits import DecodeError
        from ncl_ray.data.windows import decode_windows, plan_windows, video_duration

        d = self.cfg.data
        try:
            self.duration = video_duration(path)  # the filters' min_s/max_s read it
        except DecodeError:
            if self.window_s > 0:
                raise
            self.duration = float("nan")  # no packet timestamps: whole-video decoding may still work
        spans = plan_windows(self.duration, self.window_s, self.stride_s) if self.window_s > 0 else []
        if len(spans) <= 1:  # the frames and resize the model was trained with (data.sampler, data.resize)
            frames, n = decode_video(path, d.num_frames, d.frame_size, 1, d.sampler, d.resize)
            yield frames[None], [n], [(0.0, 0.0)]
            return
        for a in range(0, len(spans), CHUNK):  # uniform slices of each window, one decoder pass per chunk
            part = spans[a: a + CHUNK]
            yield decode_windows(path, part, d.num_frames, d.frame_size, resize=d.resize), [d.num_frames] * len(
                part), part

    def _embed(self, path: str):
        """(embeddings (W, D), spans) of one video."""
        from ncl_ray.data.transforms import normalize_frames

        torch, T = self.torch, self.cfg.data.num_frames
        emb, spans = [], []
        with torch.no_grad():
            for clips, counts, part in self._chunks(path):
                x = normalize_frames(torch.from_numpy(clips))  # (w, T, 3, S, S)
                mask = torch.arange(T)[None] < torch.tensor(counts)[:, None]  # (w, T)
                emb.append(self.model.encode_video(x, mask).float().numpy())  # (w, D)
                spans += part
        return np.concatenate(emb), spans

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        from ncl_ray.data.limits import DecodeError

        rows: Dict[str, list] = {k: [] for k in ("video_id", "path", "embedding", "error", "start_s", "end_s",
                                                 "duration_s")}
        for vid, path in zip(batch["video_id"], batch["path"]):
            self.duration = float("nan")
            try:
                emb, spans = self._embed(str(path))
                errors = [""] * len(spans)
            except DecodeError as e:
                emb, errors, spans = np.zeros((1, self.model.embed_dim), np.float32), [e.reason], [(0.0, 0.0)]
            except Exception as e:  # one hostile file must not abort the others of the same add: named, skipped
                emb, spans = np.zeros((1, self.model.embed_dim), np.float32), [(0.0, 0.0)]
                errors = [f"could not be embedded ({type(e).__name__}: {str(e)[:200]})"]
            for e_, err, (a, b) in zip(emb, errors, spans):
                for k, v in (("video_id", vid), ("path", path), ("embedding", e_), ("error", err), ("start_s", a),
                             ("end_s", b), ("duration_s", self.duration)):
                    rows[k].append(v)
        return {"video_id": np.array(rows["video_id"], dtype=object), "path": np.array(rows["path"], dtype=object),
                "embedding": np.stack(rows["embedding"]).astype(np.float32),
                "error": np.array(rows["error"], dtype=object), "start_s": np.array(rows["start_s"], np.float32),
                "end_s": np.array(rows["end_s"], np.float32), "duration_s": np.array(rows["duration_s"], np.float32)}


def add_videos(target: str, inputs: str, overrides: List[str], replace: bool = False, window_s: float = 10.0,
               stride_s: float = 5.0, follow_links: bool = False) -> int:
    from ncl_ray.runtime.checkpoint import load_checkpoint, resolve_checkpoint
    from ncl_ray.runtime.cluster import init_ray
    from ncl_ray.config.schema import from_dict
    from ncl_ray.serve.launch import ensure_index
    from ncl_ray.serve.versions import home_of, writer

    if window_s < 0 or (window_s > 0 and stride_s <= 0):
        raise ValueError(f"--window {window_s} --stride {stride_s}: windows need a positive stride (0 = whole)")
    checkpoint = resolve_checkpoint(target)
    entries, refused = read_inputs(inputs, follow_links)  # before Ray starts
    for note in refused:
        log.warning("skipped %s", note)
    state = load_checkpoint(checkpoint)  # once: its config now, its training-query bank for the biases
    cfg = from_dict(state["config"])
    here = embeds_here(len(entries), cfg.run.ray_address)
    if not here:
        init_ray(cfg.run.ray_address, verbose=cfg.run.verbose)
    embed = partial(_embed_here if here else _embed_pool, checkpoint, window_s, stride_s)
    ensure_index(checkpoint, overrides)  # an index not built yet is an evaluation: it starts Ray itself
    with writer(home_of(checkpoint), f"index add {inputs}"):  # one writer from reading to current: nothing lost
        return _add_locked(checkpoint, state, entries, refused, replace, embed)


def _embed_here(checkpoint: str, window_s: float, stride_s: float, fresh) -> List[Dict]:
    """The embedder's rows, computed in this process (serve.add_here)."""
    return embed_here(VideoEmbedder(checkpoint, window_s, stride_s), fresh)


def _embed_pool(checkpoint: str, window_s: float, stride_s: float, fresh) -> List[Dict]:
    """The embedder's rows from a Ray Data actor pool (one model per spare CPU)."""
    import ray.data

    from ncl_ray.runtime.cluster import actor_pool, map_with_pool

    actors, cpus = actor_pool(False)
    ds = ray.data.from_items([{"video_id": e.video_id, "path": e.path} for e in fresh])
    return map_with_pool(ds, VideoEmbedder, fn_constructor_kwargs={"checkpoint": checkpoint, "window_s": window_s,
                                                                 "stride_s": stride_s}, batch_size=4,
                         compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors, initial_size=1),
                         num_cpus=cpus).take_all()


def _add_locked(checkpoint, state, entries, refused, replace, embed: Callable[[list], List[Dict]]) -> int:
    from ncl_ray.serve.index import GalleryIndex
    from ncl_ray.serve.versions import carried_meta, home_of, write_version

    home = home_of(checkpoint)  # held by the caller's writer
    old = GalleryIndex.load(str(home))
    fresh, prints, notes = plan_additions(entries, old, replace)
    for note in notes:
        log.warning("skipped %s", note)
    notes = refused + notes
    if not fresh:
        print(f"nothing to add to {home}: {len(notes)} video(s) skipped")
        return 0
    out = embed(fresh)
    by_id = {e.video_id: (e, p) for e, p in zip(fresh, prints)}
    for r in out:
        if not r["error"] and changed_since_hashed(r["path"], by_id[r["video_id"]][1][1]):
            r["error"] = "the file changed while it was being added"
    good = [r for r in out if not r["error"]]
    for r in out:
        if r["error"]:
            log.warning("skipped %s: %s: %s", r["video_id"], r["path"], r["error"])
    if not good:
        raise ValueError(f"none of the {len(out)} videos could be decoded (each is named above)")
    new_ids = {r["video_id"] for r in good}
    keep = [i for i, v in enumerate(old.video_ids) if v not in new_ids]  # replaced rows leave their old place
    ids = [old.video_ids[i] for i in keep] + [r["video_id"] for r in good]
    paths = [old.paths[i] for i in keep] + [r["path"] for r in good]
    added = np.stack([r["embedding"] for r in good]).astype(np.float32)  # (A, D)
    others = {m: b for m, b in old.biases.items() if m != "ncl"}  # every method recomputed over the new gallery
    ncl, extra = new_biases(training_bank(state), old.plain, others, keep, added, old.temperature,
                            held_out_rows(old.hashes))
    captions = {v: c for v, c in old.captions.items() if v not in new_ids}
    captions.update({v: by_id[v][0].captions for v in new_ids if by_id[v][0].captions})
    replaced = sorted(new_ids & set(old.row_of))
    failed = len({r["video_id"] for r in out if r["error"]})
    windows = f" as {len(good)} windows" if len(good) > len(new_ids) else ""
    change = (f"add {len(new_ids) - len(replaced)}, replace {len(replaced)}"
              f"{' (' + ', '.join(replaced[:5]) + ')' if replaced else ''}{windows}, skip {failed + len(notes)}")
    version = write_version(home, IndexFiles.gallery(
        ids, paths, np.concatenate([old.plain[keep], added]), ncl, old.temperature, captions,
        {**carried_meta(old.meta), "bank": "train", "added": len(good)}, extra=extra,
        spans=np.concatenate([old.spans[keep], np.array([[r["start_s"], r["end_s"]] for r in good], np.float32)]),
        hashes=[old.hashes[i] for i in keep] + [by_id[r["video_id"]][1][0] for r in good],
        identities=np.concatenate([old.identities[keep], np.array([by_id[r["video_id"]][1][1] for r in good],
                                                                  np.int64).reshape(-1, 4)]),
        durations=np.concatenate([old.durations[keep], np.array([r["duration_s"] for r in good], np.float32)]),
        added=np.concatenate([old.added[keep], np.full(len(good), time.time())])), change)
    print(f"added {len(new_ids) - len(replaced)} video(s), replaced {len(replaced)}{windows}, skipped "
          f"{failed + len(notes)}; {len(ids)} rows in {version} (every method's biases recomputed over the whole "
          f"gallery, an added video's capped at the test videos' median); a running server loads it on POST /reload")
    return 0
