"""`ncl-ray prepare CONFIG [key=value ...]`: build the clip cache alone (e.g. on CPU nodes before a GPU job)."""

from ncl_ray.commands._args import add_config_args, load


def register(sub) -> None:
    sp = sub.add_parser("prepare", help="build the clip cache alone (e.g. on CPU nodes before a GPU job)")
    add_config_args(sp)
    sp.set_defaults(fn=main)


def main(args) -> int:
    from ncl_ray.data.prepare import prepare_cache

    return prepare_cache(load(args)) or 0
