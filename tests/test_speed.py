"""`optbench speed` and its table: which cases exist, what the CSV holds, how
failures and missing parameter sets show.  No timing assertions: the numbers
themselves belong to benchmarks/, these tests check behaviour only."""

from __future__ import annotations

import csv
import json
import math
import sys

import pytest
import torch

import optbench
from optbench import speed
from optbench.speed import Case


class FakeBenchmark:
    """Stands in for pytest-benchmark's fixture: runs the target once, records what it was given."""

    disabled = False

    def __init__(self):
        self.extra_info = {}
        self.group = None
        self.calls = 0

    def __call__(self, fn):
        self.calls += 1
        return fn()

    def pedantic(self, fn, setup=None, rounds=1, iterations=1):
        for _ in range(min(rounds, 2)):
            if setup:
                setup()
            self.calls += 1
            fn()


def by_id(cases):
    return {c.id: c for c in cases}


def test_cases_cover_every_optimizer_and_its_declared_variants(reg):
    cs = speed.cases(reg)
    ids = by_id(cs)
    for ps in speed.PARAM_SETS:
        for name, spec in reg.optimizers.items():
            assert any(c.kind == "optimizer" and c.name == name and c.param_set == ps for c in cs), (name, ps)
        assert {f"{ps}-adamw[fused]", f"{ps}-adamw[foreach]", f"{ps}-adamw[for-loop]", f"{ps}-sgd",
                f"{ps}-clip_grad_norm_", f"{ps}-optbench-grad-norm", f"{ps}-optbench-clip"} <= set(ids)
    # the pure-Python reference steps are scalar-only
    assert {c.param_set for c in cs if c.kind == "python"} == {"scalar"}
    # adamw defaults to fused=True, so that variant is the default one; rmsprop has torch's for-loop default
    assert ids["scalar-adamw[fused]"].is_default and not ids["scalar-adamw[for-loop]"].is_default
    assert ids["scalar-rmsprop[for-loop]"].is_default and not ids["scalar-rmsprop[foreach]"].is_default
    assert ids["scalar-sgd"].variant == "default" and ids["scalar-sgd"].is_default
    assert dict(ids["scalar-adamw[foreach]"].overrides) == {"foreach": True, "fused": False}
    assert len(ids) == len(cs)  # ids are unique


def test_variants_pass_only_the_flags_a_plugin_declares():
    fused_only = optbench.OptimizerSpec("f", lambda p, lr: None, {"lr": 0.1}, capabilities={"fused"})
    assert speed.variants(fused_only) == [("fused", {"fused": True}), ("for-loop", {"fused": False})]
    plain = optbench.OptimizerSpec("p", lambda p, lr: None, {"lr": 0.1})
    assert speed.variants(plain) == [("default", {})]
    foreach_on = optbench.OptimizerSpec("q", lambda p, lr, foreach=True: None, {"lr": 0.1, "foreach": True},
                                        capabilities={"foreach"})
    assert speed.default_variant(foreach_on) == "foreach"
    assert speed.default_variant(optbench.OptimizerSpec("r", None, {}, capabilities={"foreach"}), "cuda") == "foreach"


def test_selection_filters_and_checks_names(reg):
    sel = speed.Selection(optimizers=["sgd"], param_sets=["scalar"], kinds=["optimizer"])
    assert [c.id for c in speed.cases(reg, sel)] == ["scalar-sgd"]
    assert speed.Selection.from_env({speed.ENV: sel.to_env()}) == sel
    with pytest.raises(optbench.errors.OptbenchError, match="did you mean 'adamw'"):
        speed.check_selection(reg, speed.Selection(optimizers=["adamww"]))
    with pytest.raises(optbench.errors.OptbenchError, match="unknown parameter set 'scalr'"):
        speed.check_selection(reg, speed.Selection(param_sets=["scalr"]))


def test_parameter_sets_have_their_documented_sizes():
    synth = speed.param_shapes("synthetic-10m")
    assert len(synth) == 50
    assert 9_500_000 <= sum(math.prod(s) for s in synth) <= 10_500_000
    assert speed.param_shapes("scalar") == [(1,)]


def test_model5_shapes_come_from_the_installed_task():
    try:
        from optbench_tasks.model5.task import SIZES
    except ImportError:
        pytest.skip("model-5 task not installed")
    shapes = speed.model5_shapes("cpu")
    n = sum(math.prod(s) for s in shapes)
    emb = SIZES["cpu"]["n_embd"]
    assert (50257, emb) in shapes  # the tied token embedding / head, counted once
    assert sum(1 for s in shapes if s == (50257, emb)) == 1
    assert 5_000_000 < n < 20_000_000


def test_missing_model5_task_gives_a_clear_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "optbench_tasks.model5.gpt", None)  # makes the import fail
    with pytest.raises(speed.ParamSetUnavailable, match="model-5 task .* not installed.*--sets"):
        speed.model5_shapes("cpu")


@pytest.mark.parametrize("case_id", ["scalar-adamw[fused]", "scalar-adamw[for-loop]", "scalar-rmsprop[foreach]",
                                     "scalar-sgd", "scalar-clip_grad_norm_", "scalar-optbench-grad-norm",
                                     "scalar-optbench-clip", "scalar-python-adam", "scalar-python-sgd"])
def test_each_kind_of_case_runs_and_describes_itself(reg, case_id):
    case = by_id(speed.cases(reg, speed.Selection(param_sets=["scalar"])))[case_id]
    bench = FakeBenchmark()
    speed.run_case(bench, case, reg)
    info = bench.extra_info
    assert bench.calls >= 1 and bench.group == "scalar"
    assert {k: info[k] for k in ("kind", "name", "variant", "param_set")} == {
        "kind": case.kind, "name": case.name, "variant": case.variant, "param_set": "scalar"}
    assert set(speed.COLUMNS) - set(info) <= {"status", "reason", "median_s", "iqr_s", "q1_s", "q3_s", "mean_s",
                                              "stddev_s", "min_s", "rounds", "iterations", "steps_per_s",
                                              "speedup_vs_forloop", "state_bytes_per_param"}
    if case.name == "adamw":
        assert info["state_bytes"] == 12  # exp_avg + exp_avg_sq + step, float32
        assert info["optimizer_dist"] == "optbench"


@pytest.mark.parametrize("param_set", ["scalar", "synthetic-10m"])
def test_optbench_clip_row_clips_every_call_exactly_like_torch(param_set):
    params = speed.make_params(param_set, shrink=1 if param_set == "scalar" else 32)
    before = [p.grad.clone() for p in params]
    target, setup = speed._clip_step("optbench-clip", params)
    twins = [torch.nn.Parameter(torch.zeros_like(g)) for g in before]
    for t, g in zip(twins, before):
        t.grad = g.clone()
    total = torch.nn.utils.clip_grad_norm_(twins, speed.MAX_NORM)
    for _ in range(2):  # setup restores the gradients: every call clips from the same start
        setup()
        assert target() == total.item()  # the pre-clip norm, as clip_grad_norm_ returns it
        assert all(torch.equal(p.grad, t.grad) for p, t in zip(params, twins))  # bit for bit
    setup()


def test_disabled_benchmark_runs_each_case_once_and_still_measures_state(reg):
    case = by_id(speed.cases(reg, speed.Selection(param_sets=["scalar"])))["scalar-adam[for-loop]"]
    bench = FakeBenchmark()
    bench.disabled = True
    speed.run_case(bench, case, reg)
    assert bench.calls == 1 and bench.extra_info["state_bytes"] == 12


def test_create_graph_optimizers_are_skipped_with_a_reason(reg):
    spec = optbench.OptimizerSpec("second-order", lambda p, lr: torch.optim.SGD(p, lr=lr), {"lr": 0.1},
                                  capabilities={"create_graph"})
    reg2 = type(reg)(optimizers={"second-order": spec})
    with pytest.raises(speed.Skip, match="create_graph"):
        speed.prepare(Case("optimizer", "second-order", "default", "scalar"), reg2)


def _bench_json(entries):
    out = []
    for info, median in entries:
        out.append({"name": info.get("name", "other"), "extra_info": info,
                    "stats": {"median": median, "iqr": median / 10, "q1": median * 0.95, "q3": median * 1.05,
                              "mean": median, "stddev": 0.0, "min": median * 0.9, "rounds": 7, "iterations": 3}})
    return {"benchmarks": out}


def _info(name, variant, ps="synthetic-10m", kind="optimizer", state=80, n=10):
    return {"kind": kind, "name": name, "variant": variant, "param_set": ps, "is_default": variant == "fused",
            "n_params": n, "n_tensors": 2, "state_bytes": state, "param_bytes": 4 * n, "device": "cpu",
            "dtype": "float32", "threads": 2, "torch_version": torch.__version__, "cpu": "x",
            "optimizer_dist": "optbench", "optimizer_version": "0.1.0"}


def test_table_computes_rates_speedups_and_state_per_parameter():
    data = _bench_json([(_info("adamw", "fused"), 0.01), (_info("adamw", "foreach"), 0.054),
                        (_info("adamw", "for-loop"), 0.034),
                        (_info("clip_grad_norm_", "-", kind="clip", state=0), 65e-6),
                        ({"unrelated": True}, 1.0)])
    data["benchmarks"][-1]["extra_info"] = {}  # e.g. a harness-overhead benchmark in the same JSON
    rows = {(r["name"], r["variant"]): r for r in speed.table_from_benchmark_json(data)}
    assert len(rows) == 4
    fused, foreach = rows[("adamw", "fused")], rows[("adamw", "foreach")]
    assert fused["speedup_vs_forloop"] == pytest.approx(3.4)
    assert foreach["speedup_vs_forloop"] == pytest.approx(0.034 / 0.054)
    assert rows[("adamw", "for-loop")]["speedup_vs_forloop"] == 1.0
    assert fused["steps_per_s"] == pytest.approx(100.0)
    assert fused["state_bytes_per_param"] == 8.0
    assert fused["iterations"] == 3 and fused["rounds"] == 7 and fused["status"] == "ok"
    clip = rows[("clip_grad_norm_", "-")]
    assert math.isnan(clip["speedup_vs_forloop"]) and math.isnan(clip["state_bytes_per_param"])


def test_missing_cases_become_rows_with_their_reason():
    expected = [Case("optimizer", "adamw", "fused", "scalar", is_default=True),
                Case("optimizer", "broken", "fused", "scalar"), Case("optimizer", "lost", "default", "scalar")]
    problems = {"scalar-broken[fused]": {"id": "scalar-broken[fused]", "status": "failed",
                                         "reason": "RuntimeError: fused is not supported on CPU"}}
    rows = speed.table_from_benchmark_json(_bench_json([(_info("adamw", "fused", "scalar"), 3e-5)]), expected,
                                           problems)
    assert [(r["name"], r["status"]) for r in rows] == [("adamw", "ok"), ("broken", "failed"), ("lost", "failed")]
    assert rows[1]["reason"] == "RuntimeError: fused is not supported on CPU"
    assert "no result" in rows[2]["reason"]
    assert "broken" in speed.format_table(rows) and "fused is not supported" in speed.format_table(rows)


def test_csv_has_the_documented_columns_and_round_trips(tmp_path):
    rows = speed.table_from_benchmark_json(_bench_json([(_info("adamw", "fused"), 0.01),
                                                        (_info("adamw", "for-loop"), 0.034)]))
    path = tmp_path / "speed_steps.csv"
    path.write_text(speed.to_csv(rows))
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    assert tuple(header) == speed.COLUMNS
    back = speed.read_csv(path)
    assert back[0]["median_s"] == 0.01 and back[0]["is_default"] is True
    assert back[0]["speedup_vs_forloop"] == pytest.approx(3.4)
    assert math.isnan(back[1]["state_bytes_per_param"]) is False


def test_speed_command_end_to_end(tmp_path, capsys):
    from optbench.cli import main

    out = tmp_path / "speed_steps.csv"
    code = main(["speed", "--sets", "scalar", "--optimizers", "sgd", "--kinds", "optimizer,python",
                 "--max-time", "0.01", "--min-rounds", "1", "-o", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-2000:]
    rows = speed.read_csv(out)
    assert [(x["kind"], x["name"]) for x in rows] == [("optimizer", "sgd"), ("python", "python-sgd"),
                                                      ("python", "python-adam")]
    assert all(x["status"] == "ok" and x["median_s"] > 0 and x["rounds"] >= 1 for x in rows)
    raw = json.loads((tmp_path / "speed_steps.benchmark.json").read_text())
    assert len(raw["benchmarks"]) == 3
    assert "python-adam" in printed.out and "-> " + str(out) in printed.out
    assert "scalar-sgd passed" in printed.err  # progress, one line per case


def test_speed_command_rejects_unknown_names_in_one_line(tmp_path, capsys):
    from optbench.cli import main

    assert main(["speed", "--optimizers", "adamww", "-o", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("optbench: error: unknown optimizer 'adamww'")
    assert not (tmp_path / "x.csv").exists()


def test_speed_command_leaves_out_model5_when_the_task_is_missing(tmp_path, capsys, monkeypatch):
    from optbench.cli import main

    monkeypatch.setitem(sys.modules, "optbench_tasks.model5.gpt", None)
    # stop before timing anything: an unknown optimizer after the model-5 check
    assert main(["speed", "--sets", "model5-cpu", "-o", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "leaving out the model5-cpu parameter set" in err and "not installed" in err
    assert "nothing to time" in err
