"""`ncl-ray tune CONFIG [key=value ...]`: a Ray Tune sweep over `tune.space`; every trial a Ray Train run."""

from ncl_ray.commands._args import add_config_args, load


def register(sub) -> None:
    sp = sub.add_parser("tune", help="Ray Tune sweep; every trial is a Ray Train run")
    add_config_args(sp)
    sp.set_defaults(fn=main)


def main(args) -> int:
    from ncl_ray.train.tune import run_sweep

    return run_sweep(load(args)) or 0
