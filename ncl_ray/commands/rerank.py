"""`ncl-ray rerank --sims S.npy [--bank-sims B.npy] [--method NAME|all]` (methods: ncl/methods.py): a saved
similarity matrix, normalised and scored; no model, no Ray."""

import sys

from ncl_ray.ncl.methods import BANK_METHODS, GALLERY_BANK_METHODS, METHODS, REGISTRY, SETTINGS


def register(sub) -> None:
    sp = sub.add_parser("rerank", help="normalise a saved similarity matrix and score it")
    sp.add_argument("--sims", required=True, help="queries x gallery similarities (.npy)")
    sp.add_argument("--bank-sims", help="bank queries x gallery similarities (.npy)")
    sp.add_argument("--query-to-item", help="(queries,) int array: the correct gallery column of each row")
    sp.add_argument("--gallery-bank-sims", help="dbnorm, dbsn: gallery-bank items x gallery similarities (.npy)")
    sp.add_argument("--cross-sims", help="dbsn: bank queries x gallery-bank items similarities (.npy)")
    sp.add_argument("--method", choices=[*METHODS, "all"], default="ncl",
                    help="; ".join(m.title.format(bank="bank") for m in REGISTRY) + "; or all (default: ncl)")
    sp.add_argument("--bank", choices=["train", "test", "train+test"], default="train",
                    help="which queries the biases come from (test = transductive)")
    sp.add_argument("--temperature", type=float, default=0.01,
                    help="tau; logits = sims / tau: the model's own temperature (default: 0.01, CLIP's)")
    for s in SETTINGS:  # every method's settings, from its record
        names = [s.flag, "--iters"] if s.key == "n_iters" else [s.flag]
        sp.add_argument(*names, dest=s.key, type=type(s.default), default=s.default, choices=s.choices or None,
                        help=f"{s.help} (default: {s.default}, {s.source})")
    sp.add_argument("--transpose", action="store_true", help="score the other direction (v2t)")
    sp.add_argument("--json", help="write the metrics to this JSON file")
    sp.set_defaults(fn=main)


def main(args) -> int:
    import numpy as np

    from ncl_ray.evaluation.rerank import InputError, SavedBanks, format_table, load_matrix, rerank, write_json
    from ncl_ray.ncl.normalize import MethodSettings

    methods = list(METHODS) if args.method == "all" else [args.method]
    sims = load_matrix(args.sims, "--sims")
    bank = load_matrix(args.bank_sims, "--bank-sims") if args.bank_sims else None
    items = load_matrix(args.gallery_bank_sims, "--gallery-bank-sims") if args.gallery_bank_sims else None
    cross = load_matrix(args.cross_sims, "--cross-sims") if args.cross_sims else None
    q2i = load_matrix(args.query_to_item, "--query-to-item", ndim=1) if args.query_to_item else None
    if q2i is not None and not np.issubdtype(q2i.dtype, np.integer):
        raise InputError(f"--query-to-item: {args.query_to_item} must hold integers, got {q2i.dtype}")
    if args.method == "all" and bank is None and args.bank != "test":
        methods = [m for m in METHODS if m not in BANK_METHODS]  # the others need a bank
        print(f"no --bank-sims: scoring {' and '.join(methods)} only (pass --bank-sims, or --bank test)",
              file=sys.stderr)
    if args.method == "all" and (items is None or cross is None):
        methods = [m for m in methods if m not in GALLERY_BANK_METHODS]  # they need a gallery bank as well
    settings = MethodSettings(**{s.key: getattr(args, s.key) for s in SETTINGS})
    banks = SavedBanks(bank, args.bank, items, cross)
    results = [rerank(sims, m, banks, q2i, args.transpose, args.temperature, settings) for m in methods]
    for i, result in enumerate(results):
        print(format_table(result, header=i == 0))
    print("tau: use the model's own temperature (1 / logit_scale; 0.01 for CLIP-like models); a tau much larger "
          "than the spread of the similarities makes every normalisation a no-op")
    if args.json:
        write_json(results[0] if len(results) == 1 else {r["method"]: r for r in results}, args.json)
        print(f"wrote {args.json}")
    return 0
