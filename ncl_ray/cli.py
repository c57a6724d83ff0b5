"""ncl-ray: Normalized Contrastive Learning for text-video retrieval on Ray (also python -m ncl_ray).

Experiment commands take a config file and key=value overrides, e.g.
    ncl-ray train conf/default.yaml train.epochs=2 ncl.n_iters=0
    ncl-ray config show conf/default.yaml      (every key, its value and what it means)
"""

import argparse
import importlib
import sys
from typing import List, Optional

from ncl_ray.config.rules import ConfigError
from ncl_ray.runtime.cluster import ResourceError
from ncl_ray.ui.console import setup_console

# every verb is ncl_ray/commands/<module>.py with register(sub) and main(args) -> int, in this order in --help
VERBS = ["train", "tune", "prepare", "compare", "config", "eval", "import_", "rerank", "make_data", "manifest", "serve",
         "index", "search"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ncl-ray", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        importlib.import_module(f"ncl_ray.commands.{verb}").register(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    setup_console()  # quiet; switched to the config's run.verbose once it is loaded (runtime.cluster.init_ray)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides after an option (`compare CONFIG --seeds 5 k=v`) belong to the overrides
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    rc = 1
    try:
        rc = args.fn(args)
        return rc
    except (ConfigError, ResourceError, FileNotFoundError, FileExistsError, ValueError) as e:
        # the one place a user's error becomes exit code 2: one line, the message names the key, file or input
        print(f"{'config error' if isinstance(e, ConfigError) else 'error'}: {e}", file=sys.stderr)
        return 2
    finally:
        cluster = sys.modules.get("ncl_ray.runtime.cluster")  # loaded only by the verbs that use Ray
        if cluster is not None:
            cluster.end_private_session(rc in (0, None))


if __name__ == "__main__":
    raise SystemExit(main())
