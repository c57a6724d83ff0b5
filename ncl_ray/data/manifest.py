"""Manifests: one row per caption, `video_id, path, caption, split`, in CSV or JSONL, plus readers that turn
the standard annotation files of MSR-VTT, MSVD and ActivityNet Captions into the same form.

Relative paths are resolved against the manifest's folder. A `path` may be an object-storage URI
(s3://bucket/videos/a.mp4), and the manifest itself may live on object storage (`data.manifest=s3://...`: its
relative paths then resolve under its own URI). Rows of one video are grouped into a `VideoEntry` with all its
captions. Errors name the file and line.
"""

import csv
import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List

from ncl_ray.config.rules import ConfigError
from ncl_ray.runtime import storage

COLUMNS = ("video_id", "path", "caption", "split")
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".mov")


class ManifestError(ValueError):
    """Invalid annotation input; the message names the file (and line)."""


@dataclass
class VideoEntry:
    video_id: str
    path: str
    split: str
    captions: List[str] = field(default_factory=list)


def _resolve(value: str, base: str) -> str:
    """A manifest's `path` value as an absolute path or URI (`base`: the manifest's folder, path or URI)."""
    if storage.is_uri(value):
        return value
    if storage.is_uri(base):
        return value if Path(value).is_absolute() else storage.join(base, value)
    path = Path(storage.local_path(value))
    return str(path if path.is_absolute() else Path(base).absolute() / path)


def _group(rows: Iterable[dict], base: str, source: str) -> List[VideoEntry]:
    by_id: Dict[str, VideoEntry] = {}
    for line, row in rows:
        missing = [c for c in COLUMNS if not str(row.get(c, "") or "").strip()]
        if missing:
            raise ManifestError(f"{source}:{line}: missing or empty column(s) {', '.join(missing)}")
        path = _resolve(str(row["path"]).strip(), base)
        entry = by_id.setdefault(row["video_id"], VideoEntry(row["video_id"], path, row["split"]))
        if entry.path != path or entry.split != row["split"]:
            raise ManifestError(f"{source}:{line}: video {row['video_id']} has another path or split than before")
        entry.captions.append(str(row["caption"]).strip())
    if not by_id:
        raise ManifestError(f"{source}: no rows")
    return list(by_id.values())


def _decode_text(data: bytes, where: str) -> str:
    """The bytes as UTF-8 text; a byte that is not UTF-8 is reported with its line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ManifestError(f"{where}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8, "
                            f"e.g. iconv -f latin1 -t utf-8") from None


def _read_text(p: Path) -> str:
    return _decode_text(p.read_bytes(), str(p))


def read_manifest(path: str) -> List[VideoEntry]:
    """Read a CSV (header row) or JSONL manifest (a file, or an object-storage URI) into entries, in file
    order."""
    if storage.is_uri(path):
        try:
            fs, inner = storage.filesystem(path)
            with fs.open_input_stream(inner) as f:
                text = _decode_text(f.read(), path)
        except (OSError, ConfigError) as e:
            raise ManifestError(f"manifest {path}: cannot be read ({str(e).splitlines()[0][:200]})") from None
        return parse_manifest(text, path, path.rsplit("/", 1)[0])
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"manifest not found: {path}")
    return parse_manifest(_read_text(p), str(path), str(p.parent))


def parse_manifest(text: str, path: str, base: str) -> List[VideoEntry]:
    """A manifest's text (`path` names it in errors and gives its format; relative paths resolve in `base`)."""
    suffix = Path(path).suffix
    if suffix == ".csv":
        if not text.strip():
            raise ManifestError(f"{path}: empty file")
        with io.StringIO(text, newline="") as f:
            reader = csv.DictReader(f)
            absent = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if absent:
                raise ManifestError(f"{path}: header lacks column(s) {', '.join(absent)}")
            return _group(((i + 2, r) for i, r in enumerate(reader)), base, str(path))
    if suffix in (".jsonl", ".json"):
        rows = []
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ManifestError(f"{path}:{i}: not JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise ManifestError(f"{path}:{i}: expected a JSON object with {', '.join(COLUMNS)}")
                rows.append((i, row))
        return _group(rows, base, str(path))
    raise ManifestError(f"{path}: manifest must be .csv or .jsonl")


def _video_path(root: Path, vid: str) -> str:
    for ext in VIDEO_EXTENSIONS:
        if (root / "videos" / f"{vid}{ext}").exists():
            return str(root / "videos" / f"{vid}{ext}")
    return str(root / "videos" / f"{vid}.mp4")  # missing: reported and skipped by the decoder


def _need(root: Path, name: str) -> Path:
    p = root / name
    if not p.is_file():
        raise ManifestError(f"{p}: expected annotation file is missing (see README, 'Data preparation')")
    return p


def _holdout(ids: List[str], fraction: float = 0.05) -> set:
    """A deterministic validation hold-out from the training ids (every 1/fraction-th id, sorted)."""
    step = max(2, int(round(1 / fraction)))
    return set(sorted(ids)[::step])


def read_msrvtt(root: str, holdout: bool = True) -> List[VideoEntry]:
    """MSR-VTT, 9k train / 1k-A test (CLIP4Clip files): MSRVTT_data.json, MSRVTT_train.9k.csv,
    MSRVTT_JSFUSION_test.csv, videos/<video_id>.mp4. 5% of the 9k train videos are held out as val (none with
    holdout=False: the published protocol trains on all 9k)."""
    r = Path(root)
    data = json.loads(_need(r, "MSRVTT_data.json").read_text())
    captions: Dict[str, List[str]] = {}
    for s in data["sentences"]:
        captions.setdefault(s["video_id"], []).append(s["caption"])
    with _need(r, "MSRVTT_train.9k.csv").open(newline="") as f:
        train_ids = [row["video_id"] for row in csv.DictReader(f)]
    val = _holdout(train_ids) if holdout else set()
    entries = [VideoEntry(v, _video_path(r, v), "val" if v in val else "train", captions.get(v, []))
               for v in train_ids if captions.get(v)]
    with _need(r, "MSRVTT_JSFUSION_test.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            entries.append(VideoEntry(row["video_id"], _video_path(r, row["video_id"]), "test", [row["sentence"]]))
    return entries


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, strings and numbers only: any class or function reference (the way a
    pickle runs code) is refused before it is looked up, so nothing in the file executes."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refers to {module}.{name}; only plain data is accepted")


def load_plain_pickle(path: Path):
    """A pickle of plain Python data (MSVD's raw-captions.pkl), read without executing anything."""
    try:
        return _PlainDataUnpickler(io.BytesIO(path.read_bytes())).load()
    except Exception as e:
        raise ManifestError(f"{path}: refused or unreadable ({e}); provide the captions as raw-captions.json "
                            f"(a JSON object mapping each video id to its list of captions) instead") from None


def read_msvd(root: str, holdout: bool = True) -> List[VideoEntry]:
    """MSVD 1200/100/670: raw-captions.pkl ({video: [[tokens]]}, or the same as raw-captions.json),
    train_list.txt, val_list.txt, test_list.txt, videos/<video>.avi. The pickle is read as plain data only."""
    r = Path(root)
    if (r / "raw-captions.json").is_file():
        try:
            raw = json.loads((r / "raw-captions.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ManifestError(f"{r / 'raw-captions.json'}: not JSON ({e})") from None
    else:
        raw = load_plain_pickle(_need(r, "raw-captions.pkl"))
    if not isinstance(raw, dict):
        raise ManifestError(f"{r}: raw-captions must map video ids to caption lists, got {type(raw).__name__}")
    entries = []
    for split in ("train", "val", "test"):
        for vid in _need(r, f"{split}_list.txt").read_text().split():
            caps = [" ".join(toks) if isinstance(toks, list) else str(toks) for toks in raw.get(vid, [])]
            if caps:
                entries.append(VideoEntry(vid, _video_path(r, vid), split, caps))
    return entries


def read_activitynet(root: str, holdout: bool = True) -> List[VideoEntry]:
    """ActivityNet Captions, paragraph retrieval: train.json and val_1.json ({video: {sentences: [...]}});
    each video's sentences are joined into one paragraph; val_1 is the test split, 5% of train is val (none
    with holdout=False)."""
    r = Path(root)
    entries = []
    for name, split in (("train.json", "train"), ("val_1.json", "test")):
        data = json.loads(_need(r, name).read_text())
        ids = list(data)
        val = _holdout(ids) if split == "train" and holdout else set()
        for vid in ids:
            paragraph = " ".join(s.strip() for s in data[vid]["sentences"])
            entries.append(VideoEntry(vid, _video_path(r, vid), "val" if vid in val else split, [paragraph]))
    return entries


READERS = {"msrvtt": read_msrvtt, "msvd": read_msvd, "activitynet": read_activitynet}
