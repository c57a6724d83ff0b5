"""`ncl-ray index add | watch | list | remove | rollback RUN ...`: manage the served gallery (serve/add.py,
serve/watch.py, serve/manage.py)."""


def register(sub) -> None:
    sp = sub.add_parser("index", help="manage the served gallery: add, list, remove, rollback")
    verbs = sp.add_subparsers(dest="action", required=True)
    add = verbs.add_parser("add", help="embed videos and add them (a new index version)")
    add.add_argument("target", help="run folder or checkpoint folder")
    add.add_argument("videos", help="a video file, a folder of videos (captions from a <name>.txt beside each), or "
                                    "a manifest (CSV/JSONL with captions); ids are the file names or the manifest's")
    add.add_argument("--replace", action="store_true", help="re-embed videos whose id is already indexed")
    add.add_argument("--window", type=float, default=10.0, help="seconds per moment: longer videos are cut into "
                     "windows, each embedded and found on its own (default: 10; 0 = whole videos)")
    add.add_argument("--stride", type=float, default=5.0, help="seconds between window starts (default: 5)")
    add.add_argument("--follow-links", action="store_true", help="accept symbolic links (videos, caption "
                     "sidecars, manifest paths) that resolve inside the folder given; without it links are refused")
    add.add_argument("overrides", nargs="*", help="key=value")
    w = verbs.add_parser("watch", help="add the new videos of a folder as they appear (a running server follows)")
    w.add_argument("target", help="run folder or checkpoint folder")
    w.add_argument("folder", help="a folder of videos (captions from a <name>.txt beside each)")
    w.add_argument("--every", type=float, default=30.0, help="seconds between looks at the folder (default: 30)")
    w.add_argument("--passes", type=int, default=0, help="stop after this many looks (default: 0 = never)")
    w.add_argument("--window", type=float, default=10.0, help="as index add (default: 10; 0 = whole videos)")
    w.add_argument("--stride", type=float, default=5.0, help="as index add (default: 5)")
    w.add_argument("--follow-links", action="store_true", help="as index add")
    ls = verbs.add_parser("list", help="versions (* = current) with their changelog lines")
    ls.add_argument("target", help="run folder or checkpoint folder")
    ls.add_argument("--videos", action="store_true", help="also list the current version's videos")
    rm = verbs.add_parser("remove", help="a new version without these videos")
    rm.add_argument("target", help="run folder or checkpoint folder")
    rm.add_argument("ids", nargs="+", help="video ids")
    rb = verbs.add_parser("rollback", help="a new version equal to an earlier one")
    rb.add_argument("target", help="run folder or checkpoint folder")
    rb.add_argument("version", nargs="?", help="e.g. v0002 (default: the version before the current one)")
    sp.set_defaults(fn=main)


def main(args) -> int:
    from ncl_ray.runtime.checkpoint import resolve_checkpoint

    if args.action == "add":
        from ncl_ray.serve.add import add_videos

        return add_videos(args.target, args.videos, args.overrides, args.replace, args.window, args.stride,
                          args.follow_links) or 0
    if args.action == "watch":
        from ncl_ray.serve.watch import watch

        return watch(args.target, args.folder, args.every, args.passes, args.window, args.stride, args.follow_links)
    from ncl_ray.serve import manage

    checkpoint = resolve_checkpoint(args.target)
    if args.action == "list":
        print("\n".join(manage.list_index(checkpoint, args.videos)))
    elif args.action == "remove":
        print(f"{manage.remove_videos(checkpoint, args.ids)} is current; a running server loads it on POST /reload")
    else:
        print(f"{manage.rollback(checkpoint, args.version)} is current; a running server loads it on POST /reload")
    return 0
