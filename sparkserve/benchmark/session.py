"""One invocation: bring the setups up (``--launch`` / ``--compare``), check each answers for the
model, warm up, run the interleaved schedule, and keep every measured run, even on Ctrl-C."""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

from sparkserve.benchmark import server_stats
from sparkserve.benchmark.compare import Setup, interleaved_schedule
from sparkserve.benchmark.driver import LoadPoint, RequestSpec, run_load, send_one
from sparkserve.benchmark.frontier import next_load_worth_running
from sparkserve.benchmark.http_client import HttpClient, HttpError
from sparkserve.benchmark.launcher import LaunchedServer
from sparkserve.benchmark.metrics import RequestRecord, per_request_lists, summarize
from sparkserve.benchmark.report import aggregate, error_samples


class SetupError(Exception):
    """A setup cannot be measured (server down, wrong model, bad key): one line for the user."""


@dataclass
class Target:
    """A setup that is up: its client, the model name it answers to, and whether it is sparkserve."""

    setup: Setup
    client: HttpClient
    model: str
    server: LaunchedServer | None = None


@dataclass
class Session:
    """Everything measured so far: ``runs[setup] = [run summary, ...]``; ``current`` holds the records
    of the run in progress (reported as a partial run if the invocation is interrupted)."""

    runs: dict[str, list[dict]] = field(default_factory=dict)
    current: tuple | None = None  # (setup name, LoadPoint, repeat, records list, start perf_counter)
    interrupted: bool = False
    t0_s: float = field(default_factory=time.perf_counter)


async def check_target(client: HttpClient, model: str | None, url: str) -> str:
    """The model to request: ``model`` if the server lists it, else its first model; SetupError otherwise."""
    try:
        resp = await client.request("GET", "/v1/models")
    except (OSError, asyncio.TimeoutError) as e:
        raise SetupError(f"cannot reach the server at {url} ({type(e).__name__}: {e or 'no answer'})") from None
    if resp.status in (401, 403):
        message = HttpError(resp.status, resp.body).message
        raise SetupError(f"{url} rejected the API key (HTTP {resp.status}: {message}); pass --api-key")
    if resp.status != 200:
        raise SetupError(f"{url}/v1/models answered HTTP {resp.status}: {HttpError(resp.status, resp.body).message}")
    try:
        served = [m.get("id") for m in resp.json().get("data", [])]
    except (ValueError, AttributeError):
        raise SetupError(f"{url}/v1/models is not an OpenAI model list: {resp.body[:80]!r}") from None
    if model is None:
        if not served:
            raise SetupError(f"{url} serves no model; pass --model")
        return served[0]
    if served and model not in served:
        raise SetupError(f"model {model!r} is not served at {url} (it serves: {', '.join(map(str, served))})")
    return model


def run_summary(name: str, point: LoadPoint, repeat: int, records: list[RequestRecord], duration_s: float,
                slo: dict, spec: dict, percentiles) -> dict:
    """One run's report entry: vLLM's keys, the load, speculation deltas, per-request lists, failures."""
    summary = {"setup": name, "load": point.label, "repeat": repeat, "max_concurrency": point.max_concurrency,
               "request_rate": point.request_rate if not math.isinf(point.request_rate) else "inf",
               "burstiness": point.burstiness, **summarize(records, duration_s, slo, percentiles), **spec}
    lists = per_request_lists(records)
    lists["tpots"] = [(r.tpot_s or 0.0) if r.success else 0.0 for r in records]
    summary.update(lists)
    summary["error_samples"] = error_samples(lists["errors"])
    return summary


def partial_duration(records: list[RequestRecord], start_s: float) -> float:
    return max((r.end_s for r in records), default=start_s) - start_s


async def warm_up(target: Target, spec: RequestSpec, conversations, num: int, concurrency: int) -> None:
    """``num`` requests that are not measured (first-use costs: compile, caches, connection setup)."""
    limit = asyncio.Semaphore(max(1, concurrency))

    async def one(conv):
        async with limit:
            await send_one(target.client, spec, [], conv.turns[0], conv.max_tokens[0])

    await asyncio.gather(*(one(conversations[i % len(conversations)]) for i in range(num)))


async def run_all(session: Session, targets: list[Target], spec_for, workload_for, loads: list[LoadPoint],
                  repeats: int, seed: int, slo: dict, percentiles, floors: list[float] | None,
                  duration_s: float | None, progress=None) -> None:
    """The interleaved schedule over every target. ``workload_for(load_index, repeat)`` gives the
    conversations (the same for every setup at that load and repeat); ``spec_for(target)`` the
    request builder. With ``floors`` (frontier search), a setup stops once it fell below them."""
    names = [t.setup.name for t in targets]
    by_name = {t.setup.name: t for t in targets}
    stopped: set[str] = set()
    schedule = interleaved_schedule(names, list(range(len(loads))), repeats)
    for i, (load_i, repeat, name) in enumerate(schedule):
        if name in stopped:
            continue
        target, point = by_name[name], loads[load_i]
        records: list[RequestRecord] = []
        before = await server_stats.scrape(target.client)
        start = time.perf_counter()
        session.current = (name, point, repeat, records, start)
        if progress is not None:
            progress.label = f"{name} {point.label}"

        def done(rec, _p=progress):
            if _p is not None:
                _p.advance(rec.success)

        duration = await run_load(target.client, spec_for(target), workload_for(load_i, repeat), point, records,
                                  seed=seed + 1000 * repeat + load_i, duration_s=duration_s, on_done=done)
        received = sum(r.output_tokens for r in records if r.success)
        spec = server_stats.spec_deltas(before, await server_stats.scrape_settled(target.client, before, received))
        entry = run_summary(name, point, repeat, records, duration, slo, spec, percentiles)
        entry["start_time"] = start - session.t0_s  # seconds since the first run began (schedule order)
        session.runs.setdefault(name, []).append(entry)
        session.current = None
        last_of_load = i + 1 == len(schedule) or schedule[i + 1][0] != load_i
        if floors and last_of_load:
            for n in names:
                if not next_load_worth_running(aggregate(session.runs.get(n, [])), floors):
                    stopped.add(n)


def close_current(session: Session, slo: dict, percentiles) -> None:
    """On interruption: the run in progress becomes a partial entry (what finished before Ctrl-C)."""
    if session.current is None:
        return
    name, point, repeat, records, start = session.current
    if records:
        entry = run_summary(name, point, repeat, list(records), partial_duration(records, start), slo, {}, percentiles)
        entry["partial"] = True
        session.runs.setdefault(name, []).append(entry)
    session.current = None
