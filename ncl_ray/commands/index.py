"""`ncl-ray index add RUN_OR_CHECKPOINT VIDEOS [key=value ...]`: embed new videos into the served gallery."""


def register(sub) -> None:
    sp = sub.add_parser("index", help="manage the served gallery: index add RUN VIDEOS")
    sp.add_argument("action", choices=["add"], help="add: embed new videos and add them to the gallery")
    sp.add_argument("target", help="run folder or checkpoint folder")
    sp.add_argument("videos", help="a video file, a folder of videos, or a manifest (CSV/JSONL)")
    sp.add_argument("overrides", nargs="*", help="key=value")
    sp.set_defaults(fn=main)


def main(args) -> int:
    from ncl_ray.serve.add import add_videos

    return add_videos(args.target, args.videos, args.overrides) or 0
