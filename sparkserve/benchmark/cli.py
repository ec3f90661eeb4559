"""``sparkserve bench serve`` (also ``python -m sparkserve.benchmark serve``): arguments and the run.

Examples::

    sparkserve bench serve --base-url http://127.0.0.1:8000 --dataset demo --max-concurrency 1,4,16
    sparkserve bench serve --launch "" --dataset mt-bench --request-rate 2,4 --slo ttft_ms=500,tpot_ms=50
    sparkserve bench serve --frontier --min-tok-s-user 30,60 --out results/
        --compare none="--speculative-config '{\"method\": \"none\"}'" planner=""
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import shlex
import signal
import sys

DEFAULT_FRONTIER_CONCURRENCY = (1, 2, 4, 8, 16, 32, 64)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="BENCH")
    p = sub.add_parser("serve", help="load-test an OpenAI-compatible server (TTFT/TPOT/ITL, goodput, frontier)",
                       description="Load-test an OpenAI-compatible server: TTFT/TPOT/ITL/E2E, "
                       "throughput, per-user tok/s, goodput under SLOs, DSpark's frontier",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=__doc__.split("Examples::", 1)[1])
    add_serve_arguments(p)


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("target")
    t.add_argument("--base-url", default=None, help="a running server (default: http://127.0.0.1:8000)")
    t.add_argument("--launch", default=None, metavar="ARGS",
                   help="start `sparkserve launch ARGS` on a free 127.0.0.1 port, and stop it afterwards")
    t.add_argument("--model", default=None, help="model name to request (default: the server's first model)")
    t.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="Bearer key (default: $OPENAI_API_KEY)")
    t.add_argument("--endpoint", choices=("chat", "completions"), default="chat", help="default: %(default)s")
    t.add_argument("--compare", nargs="+", default=None, metavar="NAME=URL|ARGS",
                   help="several setups, measured interleaved: NAME=http://... or NAME=LAUNCH ARGS")
    t.add_argument("--timeout-s", type=float, default=600.0, help="per-request timeout (default: %(default)s)")
    w = p.add_argument_group("workload")
    w.add_argument("--dataset", default="demo",
                   help="demo (math+code+chat) | demo-math | demo-code | demo-chat | an eval set name (mt-bench, "
                        "gsm8k, ...) | a .jsonl of {\"turns\": [...]} | random | shared-prefix (default: demo)")
    w.add_argument("--num-prompts", type=int, default=None,
                   help="conversations per run (default: max(2 x concurrency, 16), or 32)")
    w.add_argument("--max-turns", type=int, default=None, help="use at most this many turns per conversation")
    w.add_argument("--output-len", default="128", help="max_tokens per request, or 'dataset' (the reference "
                                                        "answer's token count) (default: %(default)s)")
    w.add_argument("--random-input-len", type=int, default=128, help="random/shared-prefix prompt tokens")
    w.add_argument("--random-range-ratio", type=float, default=0.0,
                   help="random lengths uniform in [L(1-r), L(1+r)] (default: 0)")
    w.add_argument("--prefix-len", type=int, default=256, help="shared-prefix: prefix tokens (default: %(default)s)")
    w.add_argument("--num-prefixes", type=int, default=4, help="shared-prefix: distinct prefixes (default: 4)")
    w.add_argument("--tokenizer", default=None, help="tokenizer dir/file (default: the demo model's)")
    w.add_argument("--vocab-size", type=int, default=None,
                   help="random prompts draw token ids from [V/32, 15V/16) (default: the tokenizer's size)")
    w.add_argument("--ignore-eos", action="store_true", help="send ignore_eos (sparkserve, vLLM, llama.cpp)")
    w.add_argument("--temperature", type=float, default=None, help="default: the server's")
    w.add_argument("--extra-body", type=json.loads, default={}, metavar="JSON", help="merged into every request")
    a = p.add_argument_group("load")
    a.add_argument("--max-concurrency", type=_ints, default=None, metavar="C[,C...]",
                   help="concurrency limit(s); with no --request-rate a closed loop (default: 1)")
    a.add_argument("--request-rate", type=_floats, default=None, metavar="R[,R...]",
                   help="arrival rate(s) per second (default: inf = all at once)")
    a.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the gaps; 1 = Poisson")
    a.add_argument("--duration-s", type=float, default=None, help="start no conversation after this long")
    a.add_argument("--warmup-requests", type=int, default=2, help="unmeasured requests per setup (default: 2)")
    a.add_argument("--repeats", type=int, default=1, help="runs per load level and setup (default: 1)")
    a.add_argument("--seed", type=int, default=0)
    m = p.add_argument_group("metrics and output")
    m.add_argument("--slo", default=None, metavar="ttft_ms=..,tpot_ms=..", help="goodput bounds (also itl_ms, e2el_ms)")
    m.add_argument("--percentiles", type=_floats, default=[50, 90, 99], metavar="P[,P...]")
    m.add_argument("--frontier", action="store_true",
                   help="sweep concurrency (default 1..64, stopping below the floors) and report the best "
                        "throughput per --min-tok-s-user floor")
    m.add_argument("--min-tok-s-user", type=_floats, default=[60.0, 120.0], metavar="F[,F...]")
    m.add_argument("--out", default=None, metavar="DIR", help="write result.json, summary.md and the plots here")
    m.add_argument("--no-plots", action="store_true")
    m.add_argument("--no-progress", action="store_true")
    p.set_defaults(_run=run_serve)


def load_points(args) -> list:
    from sparkserve.benchmark.driver import LoadPoint

    conc = args.max_concurrency or (list(DEFAULT_FRONTIER_CONCURRENCY) if args.frontier and not args.request_rate
                                    else [None] if args.request_rate else [1])
    rates = args.request_rate or [math.inf]
    return [LoadPoint(c, r, args.burstiness) for c in conc for r in rates]


def build_workload(args, num: int, seed: int, tokenizer):
    from sparkserve.benchmark import workloads as wl

    out_len = None if args.output_len == "dataset" else int(args.output_len)
    if args.dataset in ("random", "shared-prefix"):
        vocab = args.vocab_size or tokenizer.get_vocab_size()
        convs = wl.random_workload(num, args.random_input_len, out_len or 128, args.random_range_ratio, seed,
                                   vocab=(vocab // 32, vocab * 15 // 16),
                                   prefix_len=args.prefix_len if args.dataset == "shared-prefix" else 0,
                                   num_prefixes=args.num_prefixes)
        return wl.as_text(convs, tokenizer) if args.endpoint == "chat" else convs
    return wl.dataset_workload(args.dataset, num, out_len, seed, tokenizer, args.max_turns)


def run_serve(args) -> int:
    from sparkserve.benchmark import slo as slo_mod
    from sparkserve.benchmark.compare import Setup, parse_setup

    try:
        slo = slo_mod.parse_slo(args.slo)
        setups = [parse_setup(s) for s in args.compare] if args.compare else [
            Setup("launched", launch_args=tuple(shlex.split(args.launch))) if args.launch is not None
            else Setup("server", base_url=args.base_url or "http://127.0.0.1:8000")]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return _run(args, setups, slo)


def _run(args, setups, slo) -> int:
    from sparkserve.benchmark import session as ss
    from sparkserve.benchmark.report import markdown

    sess, targets = ss.Session(), []
    config = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "api_key"}
    config.update(setups=[s.__dict__ for s in setups], date=datetime.datetime.now().isoformat(timespec="seconds"))
    code = 0
    previous = _interrupt_on(signal.SIGINT, signal.SIGTERM)
    try:
        targets = _bring_up(args, setups)
        asyncio.run(_measure(args, sess, targets, slo))
    except ss.SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        sess.interrupted = True
        ss.close_current(sess, slo, args.percentiles)
        print("\ninterrupted: reporting what was measured so far", file=sys.stderr)
        code = 130
    finally:
        for t in targets:
            if t.server is not None:
                t.server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if sess.runs:
        doc = _document(args, config, sess, targets)
        print(markdown(doc))
        _write(args, doc, markdown(doc))
    return code


def _interrupt_on(*signals) -> dict:
    """Ctrl-C, and SIGTERM too, stop the invocation the same way: report what was measured and stop
    the launched servers (also when the shell started this process with SIGINT ignored). Returns
    the handlers it replaced."""
    # default_int_handler raises KeyboardInterrupt (asyncio.run knows it)
    return {s: signal.signal(s, signal.default_int_handler) for s in signals}


def _bring_up(args, setups):
    """Launch what needs launching, one at a time (a planner profiles step times at start: two
    servers profiling at once would each measure the other), and check every target."""
    from sparkserve.benchmark.http_client import HttpClient
    from sparkserve.benchmark.launcher import LaunchedServer
    from sparkserve.benchmark.session import SetupError, Target, check_target

    servers, targets = {}, []
    try:
        for s in setups:
            server = None
            if s.base_url is None:
                print(f"launching {s.name}: sparkserve launch {shlex.join(s.launch_args)}", file=sys.stderr)
                server = servers[s.name] = LaunchedServer(s.launch_args)
                try:
                    server.wait_ready()
                except RuntimeError as e:
                    raise SetupError(f"setup {s.name!r}: {str(e).splitlines()[0]} (log: {server.log_path})") from None
            url = server.url if server else s.base_url
            headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key and not server else {}
            client = HttpClient(url, headers, args.timeout_s)
            model = asyncio.run(check_target(client, None if server else args.model, url))
            targets.append(Target(s, client, model, server))
    except BaseException:
        for srv in servers.values():
            srv.stop()
        raise
    return targets


async def _measure(args, sess, targets, slo) -> None:
    from sparkserve.benchmark.driver import RequestSpec
    from sparkserve.benchmark.progress import Progress
    from sparkserve.benchmark.session import run_all, warm_up
    from sparkserve.benchmark.workloads import load_tokenizer

    random_ids = args.dataset in ("random", "shared-prefix")
    needs_tok = args.output_len == "dataset" or (random_ids and (args.endpoint == "chat" or not args.vocab_size))
    tokenizer = load_tokenizer(args.tokenizer) if needs_tok else None
    loads = load_points(args)
    cache = {}

    def num_for(point) -> int:
        return args.num_prompts or (max(2 * point.max_concurrency, 16) if point.max_concurrency else 32)

    def workload_for(load_i: int, repeat: int):
        key = (load_i, repeat)
        if key not in cache:
            cache[key] = build_workload(args, num_for(loads[load_i]), args.seed + 1000 * repeat + load_i, tokenizer)
        return cache[key]

    def spec_for(target):
        return RequestSpec(target.model, args.endpoint, args.ignore_eos, args.temperature, args.extra_body)

    turns = [sum(len(c.turns) for c in workload_for(i, 0)) for i in range(len(loads))]
    progress = Progress(sum(turns) * args.repeats * len(targets), enabled=not args.no_progress)
    if args.warmup_requests:  # prompts of their own: a measured prompt must not find its prefix cached
        warm = build_workload(args, args.warmup_requests, args.seed + 999_999, tokenizer)
        for t in targets:
            await warm_up(t, spec_for(t), warm, args.warmup_requests, loads[0].max_concurrency or 1)
    progress.restart()  # the ETA counts measured requests only
    await run_all(sess, targets, spec_for, workload_for, loads, args.repeats, args.seed, slo, args.percentiles,
                  args.min_tok_s_user if args.frontier else None, args.duration_s, progress)
    progress.close()


def _document(args, config, sess, targets) -> dict:
    from sparkserve.benchmark.frontier import frontier
    from sparkserve.benchmark.report import aggregate

    doc = {"config": config, "interrupted": sess.interrupted, "setups": sess.runs,
           "models": {t.setup.name: t.model for t in targets},
           "servers": {t.setup.name: t.server.url if t.server else t.setup.base_url for t in targets}}
    if args.frontier:
        doc["frontier"] = [p.__dict__ for p in frontier({n: aggregate(r) for n, r in sess.runs.items()},
                                                           args.min_tok_s_user)]
    return doc


def _write(args, doc: dict, md: str) -> None:
    if not args.out:
        return
    from sparkserve.benchmark.report import write_json

    write_json(os.path.join(args.out, "result.json"), doc)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(md)
    if not args.no_plots:
        try:
            from sparkserve.benchmark.plots import write_plots

            for path in write_plots(doc, args.out):
                print(f"wrote {path}", file=sys.stderr)
        except RuntimeError as e:
            print(f"warning: {e}", file=sys.stderr)
    print(f"wrote {args.out}/result.json and summary.md", file=sys.stderr)


def run(args) -> int:
    """The ``sparkserve bench`` command: dispatch to its subcommand."""
    if getattr(args, "bench_command", None) is None:
        print("usage: sparkserve bench serve [options]  (see --help)", file=sys.stderr)
        return 2
    return run_serve(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparkserve.benchmark", description="sparkserve benchmarks")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
