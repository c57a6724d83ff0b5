"""`ncl-ray search --index EXPORT_OR_INDEX "query" [--top-k 5]`: NCL text search over an index folder, no Ray."""



def register(sub) -> None:
    sp = sub.add_parser("search", help="text search over an exported index")
    sp.add_argument("--index", required=True,
                    help="the export/ folder that ncl-ray eval wrote, or a served CHECKPOINT/index")
    sp.add_argument("query", nargs="?", help="text to search for, e.g. 'a large red circle moving left'")
    sp.add_argument("--like", metavar="VIDEO_ID", help="instead of text: videos and moments like this indexed one")
    sp.add_argument("--start", type=float, help="with --like: the moment of that video holding this second")
    sp.add_argument("--image", metavar="FILE", help="instead of text: a JPEG or PNG, embedded by the frame tower")
    sp.add_argument("--not", dest="negative", metavar="PHRASE",
                    help="with a text query: lower the videos and moments like this phrase")
    sp.add_argument("--path", help="only videos in this folder (of the indexed files)")
    sp.add_argument("--min-s", type=float, help="only videos at least this many seconds long")
    sp.add_argument("--max-s", type=float, help="only videos at most this many seconds long")
    sp.add_argument("--added-after", help="only videos `index add` added after this date (2026-12-01) or time")
    sp.add_argument("--top-k", type=int, default=5, help="number of videos to show (default: 5)")
    sp.set_defaults(fn=main)


def main(args) -> int:
    from ncl_ray.serve.index import GalleryIndex, search_texts

    if sum(x is not None for x in (args.query, args.like, args.image)) != 1:
        raise ValueError("give one of: a text query, --like VIDEO_ID, --image FILE")
    if args.negative is not None and (args.query is None or not args.negative.strip()):
        raise ValueError("--not PHRASE goes with a text query, and the phrase must not be empty")
    index, query = GalleryIndex.load(args.index), args.query
    meta = index.meta
    if args.like is not None:
        if args.like not in index.row_of:
            raise ValueError(f"--like {args.like}: no such video in {args.index}")
        hits, query = index.like(args.like, args.top_k, "ncl", args.start), f"like {args.like}"
    elif args.image is not None:
        hits, query = _image_hits(index, args.image, args.top_k), f"image {args.image}"
    else:
        hits = search_texts(index, [query], args.top_k, negative=args.negative, filters=_filters(args))[0]
        query += f" but not {args.negative!r}" if args.negative else ""
    print(f"query: {query!r}   gallery: {index.n_videos} videos, {len(index)} moments (made from the "
          f"'{meta.get('split', 'test')}' split of {meta.get('checkpoint', args.index)}), ranked by NCL (biases "
          f"from the {meta.get('bank', '?')} bank)")
    print(f"{'rank':>4s}  {'score':>8s}  {'video':<14s} first caption / path")
    for rank, hit in enumerate(hits, start=1):
        caption = hit["captions"][0] if hit["captions"] else ""
        print(f"{rank:4d}  {hit['score']:8.4f}  {hit['video_id']:<14s} {caption}")
        if "moments" in hit:  # a video cut into windows: its best moments, as the search page shows them
            print(f"{'':30s}at " + ", ".join(f"{_clock(m['start_s'])}-{_clock(m['end_s'])}" for m in hit["moments"]))
        print(f"{'':30s}{hit['path']}")
    return 0


def _filters(args):
    """The --path/--min-s/--max-s/--added-after filters; ValueError naming the flag of a bad one."""
    from ncl_ray.serve.filters import FilterError, parse_filters

    try:
        return parse_filters(lambda key: getattr(args, key))
    except FilterError as e:
        raise ValueError(f"--{e.field.replace('_', '-')}: {e.message}") from None


def _clock(seconds: float) -> str:
    """m:ss, as the search page writes a moment's time."""
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _image_hits(index, path: str, top_k: int):
    """The hits of an image file, embedded with the index's checkpoint."""
    from pathlib import Path

    from ncl_ray.runtime.checkpoint import load_model
    from ncl_ray.serve.image_query import ImageError, embed_image, read_image

    try:
        rgb = read_image(Path(path).read_bytes())
    except (ImageError, OSError) as e:
        raise ValueError(f"--image {path}: {e}") from None
    model, cfg, _ = load_model(index.meta["checkpoint"])
    return index.hits(embed_image(model, rgb, cfg.data.frame_size, cfg.data.num_frames)[None], top_k)[0]
