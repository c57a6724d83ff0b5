"""`ncl-ray compare CONFIG --seeds N [--arms plain,ncl] [--arm NAME:key=value,...] [key=value ...]`."""

from ncl_ray.commands._args import add_config_args, load


def register(sub) -> None:
    sp = sub.add_parser("compare", help="arms x seeds as one Ray Tune experiment: mean, spread, paired difference")
    add_config_args(sp)
    sp.add_argument("--seeds", type=int, default=5, help="seeds per arm (default: 5)")
    sp.add_argument("--arms", default="plain,ncl", help="comma-separated arms: plain (n_iters=0), ncl (default: both);"
                    " '' for only the --arm ones")
    sp.add_argument("--arm", action="append", default=[], metavar="NAME:key=value,...",
                    help="a further arm with its own overrides, e.g. w0.5:ncl.plain_loss_weight=0.5 (repeatable)")
    sp.set_defaults(fn=main)


def main(args) -> int:
    from ncl_ray.train.compare import parse_arm, run_comparison

    cfg = load(args)
    custom = dict(parse_arm(spec) for spec in args.arm)
    return run_comparison(cfg, args.seeds, [a.strip() for a in args.arms.split(",") if a.strip()], custom) or 0
