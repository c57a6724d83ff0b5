"""Command line: `ncl-ray {train,eval,tune,rerank,make-data,search} ...` (also `python -m ncl_ray`).

Experiment commands take a config file and `key=value` overrides:
    ncl-ray train conf/default.yaml train.epochs=2 ncl.n_iters=0
"""

import argparse
import logging
import sys
from typing import List, Optional

from ncl_ray.cluster import ResourceError
from ncl_ray.config import ConfigError


def _rerank(args: argparse.Namespace) -> int:
    import numpy as np

    from ncl_ray.rerank import InputError, format_table, load_matrix, rerank, write_json

    try:
        sims = load_matrix(args.sims, "--sims")
        bank = load_matrix(args.bank_sims, "--bank-sims") if args.bank_sims else None
        q2i = load_matrix(args.query_to_item, "--query-to-item", ndim=1) if args.query_to_item else None
        if q2i is not None and not np.issubdtype(q2i.dtype, np.integer):
            raise InputError(f"--query-to-item: {args.query_to_item} must hold integers, got {q2i.dtype}")
        result = rerank(sims, args.method, bank, q2i, args.transpose, args.iters, args.temperature, args.bank)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from ncl_ray.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.command == "train":
        from ncl_ray.train import main as run
    elif args.command == "tune":
        from ncl_ray.tune import main as run
    else:
        raise AssertionError(args.command)
    return run(cfg) or 0


def _eval(args: argparse.Namespace) -> int:
    from ncl_ray.evaluate import main as run

    return run(args.checkpoint, args.overrides) or 0


def _make_data(args: argparse.Namespace) -> int:
    from ncl_ray.data.synthetic import make_dataset

    manifest = make_dataset(args.out, args.videos, seed=args.seed)
    print(f"wrote {args.videos} videos and {manifest}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from ncl_ray.export import main as run

    return run(args.index, args.query, args.top_k) or 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ncl-ray", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in [("train", "NCL training on Ray Train, then evaluation"),
                        ("tune", "Ray Tune sweep; every trial is a Ray Train run")]:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("config", help="YAML with differences from the defaults, e.g. conf/default.yaml")
        sp.add_argument("overrides", nargs="*", help="key=value, e.g. train.epochs=2")
        sp.set_defaults(fn=_experiment)
    sp = sub.add_parser("eval", help="evaluate a checkpoint with every test-time normalisation")
    sp.add_argument("checkpoint", help="checkpoint folder (holds its config) or a run folder (its final one)")
    sp.add_argument("overrides", nargs="*", help="key=value, e.g. eval.bank=test")
    sp.set_defaults(fn=_eval)
    sp = sub.add_parser("rerank", help="normalise a saved similarity matrix and score it")
    sp.add_argument("--sims", required=True, help="queries x gallery similarities (.npy)")
    sp.add_argument("--bank-sims", help="bank queries x gallery similarities (.npy)")
    sp.add_argument("--query-to-item", help="(queries,) int array: the correct gallery column of each row")
    sp.add_argument("--method", choices=["none", "ncl", "dsl", "qbnorm"], default="ncl")
    sp.add_argument("--bank", choices=["train", "test", "train+test"], default="train",
                    help="which queries the biases come from (test = transductive)")
    sp.add_argument("--iters", type=int, default=10, help="Sinkhorn iterations")
    sp.add_argument("--temperature", type=float, default=0.01, help="tau; logits = sims / tau")
    sp.add_argument("--transpose", action="store_true", help="score the other direction (v2t)")
    sp.add_argument("--json", help="write the metrics here")
    sp.set_defaults(fn=_rerank)
    sp = sub.add_parser("make-data", help="generate the built-in synthetic video dataset")
    sp.add_argument("--out", required=True)
    sp.add_argument("--videos", type=int, default=160)
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(fn=_make_data)
    sp = sub.add_parser("search", help="text search over an exported index")
    sp.add_argument("--index", required=True, help="folder written by `ncl-ray eval` (export/)")
    sp.add_argument("query")
    sp.add_argument("--top-k", type=int, default=5)
    sp.set_defaults(fn=_search)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except ResourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, ValueError) as e:  # bad paths and inputs: the message names them
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
