"""The ``sslalm`` command.

Each subcommand lives in the module that does its job; that module exposes ``add_arguments(parser)`` and
``run_cli(args) -> int`` and keeps heavy imports (transformers, sentence-transformers) inside functions, so
``sslalm --help`` stays fast.

Errors: a ``UserError`` (a bad file, folder or setting; ``sslalm.errors``) and an ``OSError`` about a named
file (permission denied, a missing file, a full disk) are printed as one line on stderr, with exit status 2;
any other exception is a bug and keeps its traceback. ``--debug`` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("sslalm.demo", "build the local corpus, train a tiny ssLALM, evaluate it and write a report"),
    "corpus": ("sslalm.data.corpus", "build the local audio question-answering corpus"),
    "train": ("sslalm.train", "train one curriculum stage from a YAML config"),
    "ask": ("sslalm.inference", "answer a question about an audio file"),
    "eval": ("sslalm.eval.runner", "score a model on benchmarks with the paper's Table I protocol"),
    "serve": ("sslalm.serve.http", "serve a model over HTTP"),
    "app": ("sslalm.serve.app", "a Gradio app for a model"),
    "bench": ("sslalm.bench", "efficiency benchmarks (last stdout line is JSON)"),
}


def _available() -> dict[str, tuple[str, str]]:
    """Commands whose module exists in this installation."""
    out = {}
    for name, (module, help_text) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            out[name] = (module, help_text)
    return out


def _requested_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first argument that is not an option)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``sslalm`` parser. Only the requested subcommand's module is imported (``argv``; all if None),
    so one command's heavy or broken imports never slow down or break another."""
    parser = argparse.ArgumentParser(prog="sslalm", description="State-space large audio language models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of user errors too (for bug reports)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _requested_command(argv) if argv is not None else None
    for name, (module, help_text) in _available().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if argv is None or name == wanted:
            importlib.import_module(module).add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(args._module).run_cli(args) or 0)
    except Exception as exc:
        message = user_error_message(exc)
        if message is None or args.debug:
            raise
        print(f"sslalm {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sslalm {args.command}: interrupted", file=sys.stderr)
        return 130


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for an error the user can fix, or None for a bug (which keeps its traceback).

    ``UserError`` is the project's own; an ``OSError`` that names a file (permission denied, no space left,
    a missing file) is about the user's files, not the code. Multi-line messages are joined.
    """
    from sslalm.errors import UserError

    if isinstance(exc, UserError):
        text = str(exc)
    elif isinstance(exc, OSError) and getattr(exc, "filename", None):
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        return None
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
