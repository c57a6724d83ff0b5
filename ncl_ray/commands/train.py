"""`ncl-ray train CONFIG [key=value ...]`: NCL training on Ray Train, then the test evaluation and the report."""

from ncl_ray.commands._args import add_config_args, load


def register(sub) -> None:
    sp = sub.add_parser("train", help="NCL training on Ray Train, then evaluation")
    add_config_args(sp)
    sp.set_defaults(fn=main)


def main(args) -> int:
    from ncl_ray.train.job import run_job

    return run_job(load(args)) or 0
