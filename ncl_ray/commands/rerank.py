"""`ncl-ray rerank --sims S.npy [--bank-sims B.npy] [--method ncl|dsl|qbnorm|nnn|is|csls|none|all]`: a saved
similarity matrix, normalised and scored; no model, no Ray."""

import sys

from ncl_ray.ncl.methods import BANK_METHODS, METHODS


def register(sub) -> None:
    sp = sub.add_parser("rerank", help="normalise a saved similarity matrix and score it")
    sp.add_argument("--sims", required=True, help="queries x gallery similarities (.npy)")
    sp.add_argument("--bank-sims", help="bank queries x gallery similarities (.npy)")
    sp.add_argument("--query-to-item", help="(queries,) int array: the correct gallery column of each row")
    sp.add_argument("--method", choices=[*METHODS, "all"], default="ncl",
                    help="normalisation: none, ncl (Sinkhorn biases from the bank), dsl (dual softmax over the "
                         "test queries), qbnorm (QB-Norm), nnn (Nearest Neighbor Normalization), is (inverted "
                         "softmax), csls (CSLS), or all of them (default: ncl)")
    sp.add_argument("--bank", choices=["train", "test", "train+test"], default="train",
                    help="which queries the biases come from (test = transductive)")
    sp.add_argument("--iters", type=int, default=10, help="Sinkhorn iterations (default: 10)")
    sp.add_argument("--temperature", type=float, default=0.01,
                    help="tau; logits = sims / tau: the model's own temperature (default: 0.01, CLIP's)")
    sp.add_argument("--nnn-k", type=int, default=256, help="nnn: nearest bank queries per item (default: 256, "
                    "NNN's code; its README suggests 128)")
    sp.add_argument("--nnn-alpha", type=float, default=0.5, help="nnn: bias weight (default: 0.5, NNN's code; its "
                    "README suggests 0.75)")
    sp.add_argument("--is-beta", type=float, default=20.0, help="is: inverse temperature (default: 20, QB-Norm's)")
    sp.add_argument("--csls-k", type=int, default=10, help="csls: nearest neighbours (default: 10, MUSE's)")
    sp.add_argument("--transpose", action="store_true", help="score the other direction (v2t)")
    sp.add_argument("--json", help="write the metrics to this JSON file")
    sp.set_defaults(fn=main)


def main(args) -> int:
    import numpy as np

    from ncl_ray.evaluation.rerank import InputError, format_table, load_matrix, rerank, write_json
    from ncl_ray.ncl.normalize import MethodSettings

    methods = list(METHODS) if args.method == "all" else [args.method]
    sims = load_matrix(args.sims, "--sims")
    bank = load_matrix(args.bank_sims, "--bank-sims") if args.bank_sims else None
    q2i = load_matrix(args.query_to_item, "--query-to-item", ndim=1) if args.query_to_item else None
    if q2i is not None and not np.issubdtype(q2i.dtype, np.integer):
        raise InputError(f"--query-to-item: {args.query_to_item} must hold integers, got {q2i.dtype}")
    if args.method == "all" and bank is None and args.bank != "test":
        methods = [m for m in METHODS if m not in BANK_METHODS]  # the others need a bank
        print(f"no --bank-sims: scoring {' and '.join(methods)} only (pass --bank-sims, or --bank test)",
              file=sys.stderr)
    settings = MethodSettings(n_iters=args.iters, nnn_k=args.nnn_k, nnn_alpha=args.nnn_alpha,
                              is_beta=args.is_beta, csls_k=args.csls_k)
    results = [rerank(sims, m, bank, q2i, args.transpose, args.temperature, args.bank, settings) for m in methods]
    for i, result in enumerate(results):
        print(format_table(result, header=i == 0))
    print("tau: use the model's own temperature (1 / logit_scale; 0.01 for CLIP-like models); a tau much larger "
          "than the spread of the similarities makes every normalisation a no-op")
    if args.json:
        write_json(results[0] if len(results) == 1 else {r["method"]: r for r in results}, args.json)
        print(f"wrote {args.json}")
    return 0
