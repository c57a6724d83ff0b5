"""`ncl-ray import clip4clip pytorch_model.bin.N --out DIR [--config conf/msrvtt.yaml] [key=value ...]`."""


def register(sub) -> None:
    sp = sub.add_parser("import", help="a CLIP4Clip checkpoint as a ncl-ray one (eval, serve, resume_from)")
    sp.add_argument("kind", choices=["clip4clip"], help="clip4clip: its pytorch_model.bin.N (meanP, seqTransf)")
    sp.add_argument("file", help="the checkpoint file (only its tensors are read)")
    sp.add_argument("--out", required=True, help="new checkpoint folder, or a URI (s3://BUCKET/imported/NAME)")
    sp.add_argument("--config", help="YAML for the rest of the run settings, e.g. conf/msrvtt.yaml")
    sp.add_argument("overrides", nargs="*", help="key=value, e.g. data.root=/data/msrvtt")
    sp.set_defaults(fn=main)


def main(args) -> int:
    from ncl_ray.train.import_clip4clip import import_checkpoint

    return import_checkpoint(args.kind, args.file, args.out, args.config, args.overrides)
