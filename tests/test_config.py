"""Grid specs from TOML, presets and --set."""

from __future__ import annotations

import pytest

from optbench.config import apply_sets, load_preset_dict, parse_value, spec_from_dict
from optbench.errors import OptbenchError
from optbench.gridspec import GridBlock, GridSpec, expand


def test_parse_value():
    assert parse_value("1e-3") == 0.001
    assert parse_value("3") == 3 and isinstance(parse_value("3"), int)
    assert parse_value("True") is True
    assert parse_value("none") is None
    assert parse_value("cosine") == "cosine"


def test_blocks_share_top_level_keys_and_union_runs(reg):
    spec = spec_from_dict({
        "optimizers": ["sgd"], "seeds": [0, 1], "hparams": {"*": {"lr": [0.01, 0.1]}},
        "grid": [{"tasks": ["pi"]}, {"tasks": ["l2-bowl"], "clip": [0, 1.0]}, {"tasks": ["pi"]}],
    }, "test")
    runs = expand(spec, reg)
    # pi: 2 lr x 2 seeds; l2-bowl: 2 lr x 2 clip x 2 seeds; the repeated pi block adds nothing
    assert len(runs) == 4 + 8
    assert {r.clip for r in runs if r.task == "l2-bowl"} == {0.0, 1.0}


def test_wildcard_hparams_apply_only_where_known(reg):
    spec = GridSpec([GridBlock(tasks=["pi"], optimizers=["sgd", "momentum"],
                               hparams={"*": {"momentum": [0.5, 0.9]}})])
    runs = expand(spec, reg)
    assert sum(r.optimizer == "sgd" for r in runs) == 1
    assert sorted(r.hparams_dict["momentum"] for r in runs if r.optimizer == "momentum") == [0.5, 0.9]


def test_set_targets_optimizers_tasks_and_schedulers(reg):
    spec = GridSpec([GridBlock(tasks=["pi"], optimizers=["adam"], schedulers=["warmup"])])
    apply_sets(spec, ["adam.lr=0.1,0.2", "pi.target=5", "warmup.warmup_frac=0.2", "beta2=0.99"], reg)
    runs = expand(spec, reg)
    assert sorted(r.hparams_dict["lr"] for r in runs) == [0.1, 0.2]
    assert all(r.task_params_dict["target"] == 5 and r.scheduler_params_dict["warmup_frac"] == 0.2 for r in runs)
    assert all(r.hparams_dict["beta2"] == 0.99 for r in runs)
    assert runs[0].hparams_label == '{"beta2":0.99,"lr":0.1}'


@pytest.mark.parametrize("item, needle", [
    ("nope.lr=1", "no optimizer, task or scheduler named 'nope'"),
    ("pi.target=1,2", "take one value"),
    ("adam.lr", "expected NAME.KEY=VALUE"),
    ("momentun=0.9", "not known to any selected optimizer"),
])
def test_set_errors(reg, item, needle):
    spec = GridSpec([GridBlock(tasks=["pi"], optimizers=["adam"])])
    with pytest.raises(OptbenchError, match=needle):
        apply_sets(spec, [item], reg)
        expand(spec, reg)


def test_task_target_parameter_moves_the_optimum(reg):
    from optbench.runner import run_one

    spec = GridSpec([GridBlock(tasks=["pi"], optimizers=["sgd"], hparams={"sgd": {"lr": [0.1]}},
                               task_params={"pi": {"target": 5.0}})])
    r = run_one(expand(spec, reg)[0], reg)
    assert r["records"]["w"][-1] == pytest.approx(5.0, abs=1e-4)


@pytest.mark.parametrize("name", ["smoke", "quick", "course"])
def test_presets_validate(reg, name):
    spec = spec_from_dict(load_preset_dict(name), name)
    blocks = [b for b in spec.blocks if all(t in reg.tasks for t in b.tasks)]
    assert expand(GridSpec(blocks), reg)


def test_course_preset_has_the_course_experiments(reg):
    spec = spec_from_dict(load_preset_dict("course"), "course")
    runs = expand(GridSpec([b for b in spec.blocks if all(t in reg.tasks for t in b.tasks)]), reg)
    assert any(r.task == "pi" and r.grad_mode == "never" and r.optimizer == "sgd" for r in runs)
    assert {r.scheduler for r in runs if r.task == "l2-bowl"} >= {"warmup", "cosine", "linear-decay"}
    assert {r.clip for r in runs if r.task == "l2-bowl"} == {0.0, 1.0}
