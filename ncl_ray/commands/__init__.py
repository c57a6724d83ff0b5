"""One file per `ncl-ray` verb: `register(sub)` adds its parser, `main(args) -> int` runs it."""
