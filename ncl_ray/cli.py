"""ncl-ray: Normalized Contrastive Learning for text-video retrieval on Ray (also python -m ncl_ray).

Experiment commands take a config file and key=value overrides, e.g.
    ncl-ray train conf/default.yaml train.epochs=2 ncl.n_iters=0
    ncl-ray config show conf/default.yaml      (every key, its value and what it means)
"""

import argparse
import sys
from typing import List, Optional

from ncl_ray.runtime.cluster import ResourceError
from ncl_ray.config.schema import ConfigError
from ncl_ray.ui.console import setup_console


def _rerank(args: argparse.Namespace) -> int:
    import numpy as np

    from ncl_ray.evaluation.rerank import InputError, format_table, load_matrix, rerank, write_json

    methods = ["none", "ncl", "dsl", "qbnorm"] if args.method == "all" else [args.method]
    try:
        sims = load_matrix(args.sims, "--sims")
        bank = load_matrix(args.bank_sims, "--bank-sims") if args.bank_sims else None
        q2i = load_matrix(args.query_to_item, "--query-to-item", ndim=1) if args.query_to_item else None
        if q2i is not None and not np.issubdtype(q2i.dtype, np.integer):
            raise InputError(f"--query-to-item: {args.query_to_item} must hold integers, got {q2i.dtype}")
        if args.method == "all" and bank is None and args.bank != "test":
            methods = ["none", "dsl"]  # ncl and qbnorm need a bank
            print("no --bank-sims: scoring none and dsl only (pass --bank-sims, or --bank test)", file=sys.stderr)
        results = [rerank(sims, m, bank, q2i, args.transpose, args.iters, args.temperature, args.bank)
                   for m in methods]
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for i, result in enumerate(results):
        print(format_table(result, header=i == 0))
    print("tau: use the model's own temperature (1 / logit_scale; 0.01 for CLIP-like models); a tau much larger "
          "than the spread of the similarities makes every normalisation a no-op")
    if args.json:
        write_json(results[0] if len(results) == 1 else {r["method"]: r for r in results}, args.json)
        print(f"wrote {args.json}")
    return 0


def _config(args: argparse.Namespace) -> int:
    from ncl_ray.config.schema import load_config
    from ncl_ray.config.show import show

    print(show(load_config(args.config, args.overrides)))
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from ncl_ray.config.schema import load_config

    cfg = load_config(args.config, args.overrides)
    if args.command == "train":
        from ncl_ray.commands.train import main as run
    elif args.command == "tune":
        from ncl_ray.train.tune import main as run
    elif args.command == "prepare":
        from ncl_ray.commands.prepare import main as run
    else:
        raise AssertionError(args.command)
    return run(cfg) or 0


def _compare(args: argparse.Namespace) -> int:
    from ncl_ray.train.compare import main as run, parse_arm
    from ncl_ray.config.schema import load_config

    cfg = load_config(args.config, args.overrides)
    custom = dict(parse_arm(spec) for spec in args.arm)
    return run(cfg, args.seeds, [a.strip() for a in args.arms.split(",") if a.strip()], custom) or 0


def _eval(args: argparse.Namespace) -> int:
    from ncl_ray.commands.eval import main as run

    return run(args.checkpoint, args.overrides) or 0


def _import(args: argparse.Namespace) -> int:
    from ncl_ray.commands.import_ import main as run

    return run(args.kind, args.file, args.out, args.config, args.overrides)


def _make_data(args: argparse.Namespace) -> int:
    from ncl_ray.data.synthetic import make_dataset

    if args.videos <= 0:
        print(f"error: --videos must be positive, got {args.videos}", file=sys.stderr)
        return 2
    if args.profile == "realistic":
        from ncl_ray.data.corpus import make_corpus

        manifest = make_corpus(args.out, args.videos, seed=args.seed, workers=args.workers)
    else:
        manifest = make_dataset(args.out, args.videos, seed=args.seed)
    print(f"wrote {args.videos} videos and {manifest}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from ncl_ray.serve.cli import main as run

    return run(args.target, args.host, args.port, args.index, args.overrides, args.token or "", args.allow_host) or 0


def _index(args: argparse.Namespace) -> int:
    from ncl_ray.serve.add import main as run

    return run(args.target, args.videos, args.overrides) or 0


def _search(args: argparse.Namespace) -> int:
    from ncl_ray.evaluation.export import main as run

    return run(args.index, args.query, args.top_k) or 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ncl-ray", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in [("train", "NCL training on Ray Train, then evaluation"),
                        ("tune", "Ray Tune sweep; every trial is a Ray Train run"),
                        ("prepare", "build the clip cache alone (e.g. on CPU nodes before a GPU job)")]:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("config", help="YAML with differences from the defaults, e.g. conf/default.yaml")
        sp.add_argument("overrides", nargs="*", help="key=value, e.g. train.epochs=2")
        sp.set_defaults(fn=_experiment)
    sp = sub.add_parser("compare", help="arms x seeds as one Ray Tune experiment: mean, spread, paired difference")
    sp.add_argument("config", help="YAML with differences from the defaults, e.g. conf/default.yaml")
    sp.add_argument("overrides", nargs="*", help="key=value, e.g. train.epochs=10")
    sp.add_argument("--seeds", type=int, default=5, help="seeds per arm (default: 5)")
    sp.add_argument("--arms", default="plain,ncl", help="comma-separated arms: plain (n_iters=0), ncl (default: both);"
                    " '' for only the --arm ones")
    sp.add_argument("--arm", action="append", default=[], metavar="NAME:key=value,...",
                    help="a further arm with its own overrides, e.g. w0.5:ncl.plain_loss_weight=0.5 (repeatable)")
    sp.set_defaults(fn=_compare)
    sp = sub.add_parser("config", help="show the resolved config with every key's meaning")
    sp.add_argument("action", choices=["show"], help="show: print the config after defaults, file and overrides")
    sp.add_argument("config", help="YAML with differences from the defaults, e.g. conf/default.yaml")
    sp.add_argument("overrides", nargs="*", help="key=value, e.g. train.epochs=2")
    sp.set_defaults(fn=_config)
    sp = sub.add_parser("eval", help="evaluate a checkpoint with every test-time normalisation")
    sp.add_argument("checkpoint", help="checkpoint folder (holds its config) or a run folder (its final one)")
    sp.add_argument("overrides", nargs="*", help="key=value, e.g. eval.bank=test")
    sp.set_defaults(fn=_eval)
    sp = sub.add_parser("import", help="a CLIP4Clip checkpoint as a ncl-ray one (eval, serve, resume_from)")
    sp.add_argument("kind", choices=["clip4clip"], help="clip4clip: its pytorch_model.bin.N (meanP, seqTransf)")
    sp.add_argument("file", help="the checkpoint file (only its tensors are read)")
    sp.add_argument("--out", required=True, help="new checkpoint folder")
    sp.add_argument("--config", help="YAML for the rest of the run settings, e.g. conf/msrvtt.yaml")
    sp.add_argument("overrides", nargs="*", help="key=value, e.g. data.root=/data/msrvtt")
    sp.set_defaults(fn=_import)
    sp = sub.add_parser("rerank", help="normalise a saved similarity matrix and score it")
    sp.add_argument("--sims", required=True, help="queries x gallery similarities (.npy)")
    sp.add_argument("--bank-sims", help="bank queries x gallery similarities (.npy)")
    sp.add_argument("--query-to-item", help="(queries,) int array: the correct gallery column of each row")
    sp.add_argument("--method", choices=["none", "ncl", "dsl", "qbnorm", "all"], default="ncl",
                    help="normalisation: none, ncl (Sinkhorn biases from the bank), dsl (dual softmax over the "
                         "test queries), qbnorm (QB-Norm), or all of them (default: ncl)")
    sp.add_argument("--bank", choices=["train", "test", "train+test"], default="train",
                    help="which queries the biases come from (test = transductive)")
    sp.add_argument("--iters", type=int, default=10, help="Sinkhorn iterations (default: 10)")
    sp.add_argument("--temperature", type=float, default=0.01,
                    help="tau; logits = sims / tau: the model's own temperature (default: 0.01, CLIP's)")
    sp.add_argument("--transpose", action="store_true", help="score the other direction (v2t)")
    sp.add_argument("--json", help="write the metrics to this JSON file")
    sp.set_defaults(fn=_rerank)
    sp = sub.add_parser("make-data", help="generate the built-in synthetic video dataset")
    sp.add_argument("--out", required=True, help="new folder for manifest.jsonl and videos/ (must not exist)")
    sp.add_argument("--videos", type=int, default=160, help="number of videos (default: 160)")
    sp.add_argument("--profile", choices=["builtin", "realistic"], default="builtin",
                    help="builtin: 2 s 64 px clips, 3 captions; realistic: MSR-VTT's shape (10-30 s, 240p-720p, "
                         "24-30 fps, keyframes every 1-10 s, B-frames, 20 captions); use --videos 1000 for its size")
    sp.add_argument("--workers", type=int, default=0, help="parallel encoders for --profile realistic (0 = CPUs)")
    sp.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same videos")
    sp.set_defaults(fn=_make_data)
    sp = sub.add_parser("serve", help="text-to-video search on Ray Serve: HTTP API and a web page")
    sp.add_argument("target", help="run folder or checkpoint folder")
    sp.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    sp.add_argument("--token", help="required beyond loopback (or $NCL_RAY_SERVE_TOKEN): clients send "
                    "'Authorization: Bearer TOKEN'; open the page as http://HOST:PORT/#token=TOKEN")
    sp.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                    help="a Host name clients use besides loopback and --host (repeatable; e.g. behind a proxy)")
    sp.add_argument("--index", choices=["exact", "hnsw"], default="exact",
                    help="exact inner product (default) or approximate HNSW for large galleries")
    sp.add_argument("overrides", nargs="*", help="key=value for building the gallery, e.g. data.root=...")
    sp.set_defaults(fn=_serve)
    sp = sub.add_parser("index", help="manage the served gallery: index add RUN VIDEOS")
    sp.add_argument("action", choices=["add"], help="add: embed new videos and add them to the gallery")
    sp.add_argument("target", help="run folder or checkpoint folder")
    sp.add_argument("videos", help="a video file, a folder of videos, or a manifest (CSV/JSONL)")
    sp.add_argument("overrides", nargs="*", help="key=value")
    sp.set_defaults(fn=_index)
    sp = sub.add_parser("search", help="text search over an exported index")
    sp.add_argument("--index", required=True, help="the export/ folder that ncl-ray eval wrote")
    sp.add_argument("query", help="text to search for, e.g. 'a large red circle moving left'")
    sp.add_argument("--top-k", type=int, default=5, help="number of videos to show (default: 5)")
    sp.set_defaults(fn=_search)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    setup_console(verbose=any(a in ("run.verbose=true", "run.verbose=True") for a in (argv or sys.argv[1:])))
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides after an option (`compare CONFIG --seeds 5 k=v`) belong to the overrides
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
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
