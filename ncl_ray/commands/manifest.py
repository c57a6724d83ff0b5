"""`ncl-ray manifest msrvtt|msvd|activitynet ROOT --out FILE [--prefix s3://BUCKET/msrvtt]`: a named dataset's
annotation files as one manifest (`data.dataset=manifest`), with video paths under `--prefix`, so that a cluster
without a shared mount reads the videos from a bucket: upload ROOT's videos/ folder to PREFIX/videos/ and train
with `data.manifest=FILE` (the file may be uploaded too). No Ray."""

import json
from pathlib import Path


def register(sub) -> None:
    sp = sub.add_parser("manifest", help="write a named dataset's annotations as a manifest (videos in a bucket)")
    sp.add_argument("dataset", choices=["msrvtt", "msvd", "activitynet"])
    sp.add_argument("root", help="the dataset folder (its annotation files and videos/)")
    sp.add_argument("--out", required=True, help="manifest file to write (.jsonl; refused if it exists)")
    sp.add_argument("--prefix", default="",
                    help="where ROOT's files will be, e.g. s3://BUCKET/msrvtt (default: ROOT itself)")
    sp.add_argument("--published", action="store_true",
                    help="keep the validation videos in training (train.protocol=published); default: held out")
    sp.set_defaults(fn=main)


def rows(entries, root: Path, prefix: str):
    """One JSON row per caption, the video's path moved from under `root` to under `prefix`."""
    for e in entries:
        path = e.path
        if prefix:
            rel = Path(e.path).resolve().relative_to(root.resolve()).as_posix()
            path = prefix.rstrip("/") + "/" + rel
        for caption in e.captions:
            yield {"video_id": e.video_id, "path": path, "caption": caption, "split": e.split}


def main(args) -> int:
    from ncl_ray.data.manifest import READERS

    out = Path(args.out)
    if out.suffix != ".jsonl":
        raise ValueError(f"--out {out}: the manifest is written as JSONL, name it *.jsonl")
    if out.exists():
        raise FileExistsError(f"--out {out} exists; choose a new file")
    entries = READERS[args.dataset](args.root, holdout=not args.published)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w") as f:
        n = 0
        for row in rows(entries, Path(args.root), args.prefix):
            f.write(json.dumps(row) + "\n")
            n += 1
    tmp.replace(out)
    print(f"wrote {out}: {len(entries)} videos, {n} captions"
          + (f", paths under {args.prefix}" if args.prefix else ""))
    return 0
