"""cnnlab serve: the local web app."""

from __future__ import annotations

import argparse

from ..errors import UserError


def add_serve(sub) -> None:
    w = sub.add_parser("serve", help="a local web app: runs and reports, classify and stylize uploads")
    w.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    w.add_argument("--port", type=int, default=8000)
    w.add_argument("--runs", metavar="DIR", default="runs", help="the run directories to browse (default runs)")
    w.add_argument("--max-upload-mb", type=float, default=10.0, help="larger uploads get 413 (default 10)")
    w.add_argument("--threads", type=int)
    w.add_argument("--data-root", metavar="DIR", help="where runs started from the page find CIFAR-10 "
                                                        "(default: $CNNLAB_DATA, else ~/.cache/cnnlab)")
    w.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..engine.device import configure_threads

    if not args.max_upload_mb > 0 or not 0 < args.port < 65536:  # NaN fails too
        raise UserError(f"--max-upload-mb must be more than 0 and --port in 1-65535, got {args.max_upload_mb} "
                        f"and {args.port}")
    local = args.host in ("127.0.0.1", "localhost", "::1")
    try:
        import uvicorn

        from ..serve import create_app

        app = create_app(args.runs, args.max_upload_mb,
                         allowed_hosts=["127.0.0.1", "localhost", "[::1]"] if local else None,
                         data_root=args.data_root)
    except (ImportError, RuntimeError) as exc:  # python-multipart missing is a RuntimeError at app creation
        raise UserError(f"cnnlab serve needs the web extra ({exc}): pip install 'cnnlab[serve]'") from None
    configure_threads(args.threads)
    print(f"cnnlab serve: http://{args.host}:{args.port} (runs: {args.runs})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
