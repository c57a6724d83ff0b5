"""`ncl-ray tune CONFIG [key=value ...]`: a Ray Tune sweep over `tune.space`; every trial a Ray Train run."""

from ncl_ray.commands._args import config_verb


def run(cfg) -> int:
    from ncl_ray.train.tune import run_sweep

    return run_sweep(cfg)


register, main = config_verb("tune", "Ray Tune sweep; every trial is a Ray Train run", run)
