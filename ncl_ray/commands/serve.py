"""`ncl-ray serve RUN_OR_CHECKPOINT [--host 127.0.0.1] [--port 8000] [--index exact|hnsw] [key=value ...]`."""


def register(sub) -> None:
    sp = sub.add_parser("serve", help="text-to-video search on Ray Serve: HTTP API and a web page")
    sp.add_argument("target", help="run folder or checkpoint folder")
    sp.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    sp.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    sp.add_argument("--token-file", metavar="FILE", help="a file (mode 600) holding the token that every request "
                    "but the page must carry, required beyond loopback (or $NCL_RAY_SERVE_TOKEN): clients send "
                    "'Authorization: Bearer TOKEN'; open the page as http://HOST:PORT/#token=TOKEN")
    sp.add_argument("--token", help="the token itself (works, but every local user sees it in ps: prefer "
                    "--token-file)")
    sp.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                    help="a Host name clients use besides loopback and --host (repeatable; e.g. behind a proxy)")
    sp.add_argument("--index", choices=["exact", "hnsw"], default="exact",
                    help="exact inner product (default) or approximate HNSW for large galleries")
    sp.add_argument("overrides", nargs="*", help="key=value for building the gallery, e.g. data.root=...")
    sp.set_defaults(fn=main)


def main(args) -> int:
    from ncl_ray.serve.launch import serve_run

    return serve_run(args.target, args.host, args.port, args.index, args.overrides, args.token or "",
                     args.allow_host, args.token_file or "") or 0
