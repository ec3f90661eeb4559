"""CLI: `python -m sparkserve.demo build [--out DIR] [--quick] [--seed N] [--export DIR | --no-export]`,
`... drafters`, `... inflate --width W --out DIR` (the widened bench world, demo/inflate.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparkserve demo", description="Build the sparkserve demo model.")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `demo` subcommands (shared by `python -m sparkserve.demo` and `sparkserve demo`)."""
    sub = p.add_subparsers(dest="demo_command", required=True, metavar="ACTION")
    b = sub.add_parser("build", help="corpus -> tokenizer -> train -> export (resumes if interrupted)")
    b.add_argument("--out", default=None, help="work directory (default runs/demo, or runs/demo-quick)")
    b.add_argument("--quick", action="store_true", help="tiny end-to-end recipe (a few minutes)")
    b.add_argument("--seed", type=int, default=0)
    g = b.add_mutually_exclusive_group()
    g.add_argument("--export", default=None, help="also copy the final model here (default: none; it stays in OUT/model)")
    g.add_argument("--ship", action="store_true",
                   help="copy it over the shipped demo model in sparkserve/assets/demo (maintainers: the shipped "
                        "drafters were trained against the model it replaces)")
    g.add_argument("--no-export", action="store_true", help="leave the model in OUT/model only (the default)")
    b.add_argument("--threads", type=int, default=2,
                   help="torch CPU threads; 0 re-picks 1 or 2 as the shared machine's load changes")
    b.add_argument("--max-steps", type=int, default=None, help="override the recipe's step count")
    from sparkserve.demo.drafters import add_arguments as add_drafter_arguments

    d = sub.add_parser("drafters", help="train, calibrate, evaluate and ship the demo drafters (resumable)")
    add_drafter_arguments(d)
    i = sub.add_parser("inflate", help="write a function-preserving W-times wider copy of the demo target and drafters")
    i.add_argument("--width", type=int, required=True, help="W: copies of every hidden unit, head and MLP unit")
    i.add_argument("--out", required=True, help="output directory (HF layout, drafters under OUT/drafters)")
    i.add_argument("--source", default=None, help="model directory to widen (default: the shipped demo model)")
    i.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="stored weight dtype")


def main(argv: list[str] | None = None) -> int:
    return run(parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    if args.demo_command == "drafters":
        from sparkserve.demo.drafters import run as run_drafters

        return run_drafters(args)
    if args.demo_command == "inflate":
        from sparkserve.assets import demo_model_path
        from sparkserve.demo.inflate import inflate
        from sparkserve.models.loader import DTYPES

        report = inflate(args.source or demo_model_path(), args.out, args.width, DTYPES[args.dtype])
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    from sparkserve.demo.build import build, default_out_dir, export_target
    from sparkserve.demo.recipe import FULL, QUICK

    recipe = QUICK if args.quick else FULL
    if args.max_steps is not None:
        recipe = recipe.with_steps(args.max_steps)
    out = args.out or default_out_dir(args.quick)
    export = export_target(args)  # never the shipped assets unless asked (--ship)
    report = build(recipe, args.seed, out, export, num_threads=args.threads)
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    # On a shared CPU, spinning OpenMP workers burn the time slices their peers are waiting for.
    # Set before torch is imported (a caller of main() that already imported torch keeps its policy).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.exit(main())
