"""`ncl-ray eval CHECKPOINT_OR_RUN [key=value ...]`: a checkpoint on the test split with every normalisation."""


def register(sub) -> None:
    sp = sub.add_parser("eval", help="evaluate a checkpoint with every test-time normalisation")
    sp.add_argument("checkpoint", help="checkpoint folder (holds its config) or a run folder (its final one)")
    sp.add_argument("overrides", nargs="*", help="key=value, e.g. eval.bank=test")
    sp.set_defaults(fn=main)


def main(args) -> int:
    from ncl_ray.evaluation.checkpoint_eval import evaluate_checkpoint

    return evaluate_checkpoint(args.checkpoint, args.overrides) or 0
