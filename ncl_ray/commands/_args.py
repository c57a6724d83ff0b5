"""Arguments several verbs share: a config file and key=value overrides, loaded with the same rules."""

import argparse


def add_config_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("config", help="YAML with differences from the defaults, e.g. conf/default.yaml")
    sp.add_argument("overrides", nargs="*", help="key=value, e.g. train.epochs=2 or 'eval.methods=[none,ncl]'")


def load(args: argparse.Namespace):
    """The typed config of `args.config` with `args.overrides`; ConfigError names the file, line or key."""
    from ncl_ray.config.schema import load_config

    return load_config(args.config, args.overrides)


def config_verb(name: str, help_: str, run):
    """(register, main) of a verb whose only arguments are a config and overrides: `main` loads the config and
    calls `run(cfg)` (which imports its room when the verb runs, so `ncl-ray --help` stays light)."""

    def main(args: argparse.Namespace) -> int:
        return run(load(args)) or 0

    def register(sub) -> None:
        sp = sub.add_parser(name, help=help_)
        add_config_args(sp)
        sp.set_defaults(fn=main)

    return register, main
