"""`ncl-ray make-data --out DIR [--videos N] [--profile builtin|realistic]`: the built-in synthetic videos."""



def register(sub) -> None:
    sp = sub.add_parser("make-data", help="generate the built-in synthetic video dataset")
    sp.add_argument("--out", required=True, help="new folder for manifest.jsonl and videos/ (must not exist)")
    sp.add_argument("--videos", type=int, default=160, help="number of videos (default: 160)")
    sp.add_argument("--profile", choices=["builtin", "realistic"], default="builtin",
                    help="builtin: 2 s 64 px clips, 3 captions; realistic: MSR-VTT's shape (10-30 s, 240p-720p, "
                         "24-30 fps, keyframes every 1-10 s, B-frames, 20 captions); use --videos 1000 for its size")
    sp.add_argument("--workers", type=int, default=0, help="parallel encoders for --profile realistic (0 = CPUs)")
    sp.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same videos")
    sp.set_defaults(fn=main)


def main(args) -> int:
    if args.videos <= 0:
        raise ValueError(f"--videos must be positive, got {args.videos}")
    if args.profile == "realistic":
        from ncl_ray.data.corpus import make_corpus

        manifest = make_corpus(args.out, args.videos, seed=args.seed, workers=args.workers)
    else:
        from ncl_ray.data.synthetic import make_dataset

        manifest = make_dataset(args.out, args.videos, seed=args.seed)
    print(f"wrote {args.videos} videos and {manifest}")
    return 0
