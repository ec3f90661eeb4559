"""The frontier search on synthetic runs: best throughput under each per-user floor, the stopping
rule, the Pareto curve, and the interleaved --compare schedule."""
from sparkserve.benchmark.compare import Setup, interleaved_schedule, parse_setup
from sparkserve.benchmark.frontier import best_under_floor, frontier, next_load_worth_running, pareto
from sparkserve.benchmark.report import aggregate


def run(load, speed, tp):
    return {"load": load, "median_user_tok_s": speed, "output_throughput": tp}


# A plain setup and a speculative one: speculation is faster per user at low load, slower at high.
PLAIN = [run("c=1", 100, 100), run("c=2", 95, 190), run("c=4", 60, 240), run("c=8", 40, 320), run("c=16", 25, 400)]
SPEC = [run("c=1", 180, 180), run("c=2", 150, 300), run("c=4", 125, 500), run("c=8", 70, 560), run("c=16", 30, 480)]


def test_best_throughput_under_each_floor():
    f = {(p.setup, p.min_tok_s_user): p for p in frontier({"plain": PLAIN, "spec": SPEC}, [120, 60, 30])}
    assert f["plain", 120].load is None and f["plain", 120].output_throughput == 0.0  # nothing is that fast
    assert (f["plain", 60].load, f["plain", 60].output_throughput, f["plain", 60].user_tok_s) == ("c=4", 240, 60)
    assert (f["plain", 30].load, f["plain", 30].output_throughput) == ("c=8", 320)
    assert (f["spec", 120].load, f["spec", 120].output_throughput) == ("c=4", 500)
    assert (f["spec", 60].load, f["spec", 60].output_throughput) == ("c=8", 560)
    # the best qualifying point need not be the heaviest load that qualifies
    assert (f["spec", 30].load, f["spec", 30].output_throughput) == ("c=8", 560)
    assert best_under_floor([], 10, "x").load is None


def test_search_stops_below_the_lowest_floor_twice():
    assert next_load_worth_running([], [60])
    assert next_load_worth_running(PLAIN[:3], [60, 120])  # c=4 is exactly at the floor
    assert next_load_worth_running(PLAIN[:4], [60, 120])  # c=8 is below it: one level may be noise
    assert not next_load_worth_running(PLAIN[:5], [60, 120])  # c=8 and c=16 are both below
    assert not next_load_worth_running(PLAIN[:4], [60, 120], patience=1)
    assert next_load_worth_running(PLAIN[:1], [200])  # too few levels to judge
    assert next_load_worth_running(PLAIN, [30]) and next_load_worth_running(PLAIN, [])


def test_pareto_and_repeat_medians():
    pts = pareto(PLAIN + [run("c=3", 70, 150)])  # c=3: slower per user than c=2 and less throughput
    assert [p["load"] for p in pts] == ["c=1", "c=2", "c=4", "c=8", "c=16"]
    assert [p["load"] for p in pareto([run("a", 50, 100), run("b", 40, 90)])] == ["a"]
    rows = aggregate([{**run("c=1", 10, 100), "repeat": 0}, {**run("c=1", 20, 300), "repeat": 1},
                      {**run("c=1", 30, 200), "repeat": 2}, {**run("c=2", 5, 50), "repeat": 0}])
    assert [(r["load"], r["median_user_tok_s"], r["output_throughput"], r["repeats"]) for r in rows] == \
        [("c=1", 20, 200, 3), ("c=2", 5, 50, 1)]


def test_interleaved_schedule_rotates_setups():
    order = interleaved_schedule(["a", "b", "c"], ["L1", "L2"], repeats=3)
    assert order == [("L1", 0, "a"), ("L1", 0, "b"), ("L1", 0, "c"), ("L1", 1, "b"), ("L1", 1, "c"),
                     ("L1", 1, "a"), ("L1", 2, "c"), ("L1", 2, "a"), ("L1", 2, "b"),
                     ("L2", 0, "a"), ("L2", 0, "b"), ("L2", 0, "c"), ("L2", 1, "b"), ("L2", 1, "c"),
                     ("L2", 1, "a"), ("L2", 2, "c"), ("L2", 2, "a"), ("L2", 2, "b")]
    assert interleaved_schedule(["only"], [1, 2]) == [(1, 0, "only"), (2, 0, "only")]


def test_parse_setup():
    assert parse_setup("vllm=http://h:8000/") == Setup("vllm", base_url="http://h:8000/")
    assert parse_setup("""k3=--speculative-config '{"verify": "fixed"}'""") == \
        Setup("k3", launch_args=("--speculative-config", '{"verify": "fixed"}'))
    assert parse_setup("default=") == Setup("default")


def test_markdown_frontier_ratios_compare_setups_of_one_model():
    from sparkserve.benchmark.frontier import frontier as fr
    from sparkserve.benchmark.report import markdown

    def runs(rows):
        return [{**r, "setup": "x", "repeat": 0, "completed": 1, "failed": 0} for r in rows]

    setups = {"a-plain": runs(PLAIN), "a-spec": runs(SPEC), "b-plain": runs(PLAIN[:2])}
    doc = {"config": {"dataset": "demo", "endpoint": "chat"}, "setups": setups,
           "models": {"a-plain": "A", "a-spec": "A", "b-plain": "B"},
           "frontier": [p.__dict__ for p in fr({n: aggregate(r) for n, r in setups.items()}, [60])]}
    text = markdown(doc)
    assert "| a-spec | 60 | c=8 | 560 | 70 | 2.33 (a-plain) |" in text
    assert "| b-plain | 60 | c=2 | 190 | 95 | 1 (b-plain) |" in text
