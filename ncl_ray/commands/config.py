"""`ncl-ray config show CONFIG [key=value ...]`: the resolved config as YAML, each key with its meaning."""

from ncl_ray.commands._args import add_config_args, load


def register(sub) -> None:
    sp = sub.add_parser("config", help="show the resolved config with every key's meaning")
    sp.add_argument("action", choices=["show"], help="show: print the config after defaults, file and overrides")
    add_config_args(sp)
    sp.set_defaults(fn=main)


def main(args) -> int:
    from ncl_ray.config.show import show

    cfg = load(args)
    if not _name_given(args):  # the clock's name is made at each start: shown as '', the output trains again
        cfg.run.name = ""
    print(show(cfg))
    return 0


def _name_given(args) -> bool:
    """Whether the file or the command line sets run.name."""
    from omegaconf import OmegaConf

    if any(item.split("=", 1)[0].strip() == "run.name" for item in args.overrides):
        return True
    return bool(OmegaConf.select(OmegaConf.load(args.config), "run.name", default=""))
