"""`ncl-ray train CONFIG [key=value ...]`: NCL training on Ray Train, then the test evaluation and the report."""

from ncl_ray.commands._args import config_verb


def run(cfg) -> int:
    from ncl_ray.train.job import run_job

    return run_job(cfg)


register, main = config_verb("train", "NCL training on Ray Train, then evaluation", run)
