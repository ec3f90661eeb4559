"""The ``sparkserve`` command line: ``sparkserve COMMAND [options]``.

Subcommands live in ``COMMANDS``: name -> (module, one-line help). A command module provides
``add_arguments(parser)`` and ``run(args) -> int``. Only the chosen command's module is imported,
so a command's heavy imports (torch, training code) never slow down or leak into another; in
particular ``launch`` keeps the API server process free of torch. Add yours with one line.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "launch": ("sparkserve.server.launch", "serve a model over an OpenAI-compatible HTTP API"),
    "demo": ("sparkserve.demo.__main__", "build the embedded demo model from local sources (corpus, tokenizer, LM)"),
    "drafter": ("sparkserve.tools.drafter_cli", "write drafter checkpoints (random init for tests and training)"),
    "train": ("sparkserve.train.cli", "drafter toolchain: regenerate data, fit, calibrate (STS), evaluate"),
    "profile": ("sparkserve.tools.profile_cli", "measure and cache the step-time table SPS(B, R) the verify planner uses"),
    "kernels": ("sparkserve.tools.kernels_cli", "build the native CPU kernels for this machine now (or --check)"),
    "bench": ("sparkserve.benchmark.cli", "benchmarks: `bench serve` load-tests an OpenAI-compatible server"),
}


class OneLineErrorParser(argparse.ArgumentParser):
    """A usage error is one line (``sparkserve launch: error: ...``), not the usage block before it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(command: str | None) -> argparse.ArgumentParser:
    from sparkserve import __version__

    parser = argparse.ArgumentParser(prog="sparkserve", description="sparkserve: LLM serving with DSpark "
                                     "speculative decoding")
    parser.add_argument("--version", action="version", version=f"sparkserve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineErrorParser)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
