"""`ncl-ray config show CONFIG [key=value ...]`: the resolved config as YAML, each key with its meaning."""

from ncl_ray.commands._args import add_config_args, load


def register(sub) -> None:
    sp = sub.add_parser("config", help="show the resolved config with every key's meaning")
    sp.add_argument("action", choices=["show"], help="show: print the config after defaults, file and overrides")
    add_config_args(sp)
    sp.set_defaults(fn=main)


def main(args) -> int:
    from ncl_ray.config.show import show

    print(show(load(args)))
    return 0
