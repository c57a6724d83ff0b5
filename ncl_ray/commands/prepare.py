"""`ncl-ray prepare CONFIG [key=value ...]`: build the clip cache alone (e.g. on CPU nodes before a GPU job)."""

from ncl_ray.commands._args import config_verb


def run(cfg) -> int:
    from ncl_ray.data.prepare import prepare_cache

    return prepare_cache(cfg)


register, main = config_verb("prepare", "build the clip cache alone (e.g. on CPU nodes before a GPU job)", run)
