"""The command line: one clear line for bad input, nothing run; real runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from optbench.cli import main


def optbench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "optbench", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def inprocess(capsys, *args):
    """Run the CLI in this process (fast); returns an object shaped like CompletedProcess."""
    code = main(list(args))
    cap = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, cap.out, cap.err)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("optbench: error: ")
    assert "Traceback" not in proc.stderr
    assert not proc.stdout
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--optimizers", "adma", "--tasks", "pi"], ["unknown optimizer 'adma'", "did you mean 'adam'"]),
        (["--optimizers", "adam", "--tasks", "pii"], ["unknown task 'pii'", "did you mean 'pi'"]),
        (["--optimizers", "adam", "--tasks", "pi", "--schedulers", "cosin"], ["did you mean 'cosine'"]),
        (["--optimizers", "adam", "--tasks", "pi", "--set", "adam.lrr=0.1"], ["no parameter 'lrr'",
                                                                               "did you mean 'lr'"]),
        (["--optimizers", "adam", "--tasks", "pi", "--set", "adam.lr=-1"], ["bad hyper-parameter", "adam",
                                                                             "lr=-1"]),
        (["--optimizers", "adam", "--tasks", "pi", "--set", "adam.beta1=1.5"], ["beta1=1.5"]),
        (["--optimizers", "adam", "--tasks", "pi", "--grad-modes", "nevr"], ["gradient mode 'nevr'",
                                                                              "did you mean 'never'"]),
        (["--preset", "quik"], ["unknown preset 'quik'", "did you mean 'quick'"]),
    ],
)
def test_bad_input_is_one_line_and_runs_nothing(tmp_path, capsys, args, needles):
    out = tmp_path / "out"
    proc = inprocess(capsys, "grid", *args, "--out", str(out))
    assert_one_line_error(proc, *needles)
    assert not out.exists()


def test_malformed_toml_names_line_and_column(tmp_path):
    cfg = tmp_path / "grid.toml"
    cfg.write_text('tasks = ["pi"]\noptimizers = ["adam"\nseeds = [0]\n')
    proc = optbench("grid", "--config", str(cfg), "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, "grid.toml", "invalid TOML", "line 3", "column")
    assert not (tmp_path / "out").exists()


def test_unknown_config_key_is_named(tmp_path, capsys):
    cfg = tmp_path / "grid.toml"
    cfg.write_text('tasks = ["pi"]\noptimisers = ["adam"]\n')
    assert_one_line_error(inprocess(capsys, "grid", "--config", str(cfg)), "unknown key 'optimisers'",
                          "did you mean 'optimizers'")


def test_grid_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["grid", "--tasks", "pi,l2-bowl", "--optimizers", "sgd,adam", "--set", "lr=0.01,0.1",
                 "--seeds", "0,1", "--steps", "40", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "16 runs (16 ran, 0 reused): 16 ok" in printed
    assert "best setting per task and optimizer" in printed
    for name in ("runs.parquet", "summary.csv", "convergence.csv", "speed.csv", "meta.json"):
        assert (out / name).stat().st_size > 0
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 16 and set(summary["status"]) == {"ok"}
    steps = pd.read_parquet(out / "runs.parquet")
    assert len(steps) == 16 * 40
    assert {"run_key", "step", "loss", "grad_norm", "lr", "step_time", "w", "w0", "w1"} <= set(steps.columns)
    conv = pd.read_csv(out / "convergence.csv")
    assert len(conv) == 8 and set(conv["n_seeds"]) == {2}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["schema"] == 1 and meta["torch_version"] and meta["runs"] == 16
    assert meta["plugins"]["optimizer"]["adam"]["dist"] == "optbench"
    # a second identical call reuses every run
    assert main(["grid", "--tasks", "pi,l2-bowl", "--optimizers", "sgd,adam", "--set", "lr=0.01,0.1",
                 "--seeds", "0,1", "--steps", "40", "--out", str(out), "--quiet"]) == 0
    assert "(0 ran, 16 reused)" in capsys.readouterr().out


def test_list_shows_every_builtin_with_its_origin():
    proc = optbench("list")
    assert proc.returncode == 0, proc.stderr
    for name in ("sgd", "momentum", "adam", "adamw", "adam-l2", "rmsprop", "constant", "warmup", "cosine",
                 "linear-decay", "warmup-cosine", "step", "pi", "l2-bowl"):
        assert f"  {name} " in proc.stdout
    assert "from optbench 0.1.0" in proc.stdout
    data = json.loads(optbench("list", "--json").stdout)
    assert data["optimizer"]["adamw"]["defaults"]["weight_decay"] == 0.01


def test_plugin_dir_and_blocking(tmp_path):
    (tmp_path / "myopt.py").write_text(
        "import torch, optbench\n"
        "@optbench.hookimpl\n"
        "def optbench_optimizers():\n"
        "    return [optbench.OptimizerSpec('my-sgd', torch.optim.SGD, {'lr': 0.01})]\n"
    )
    listed = optbench("list", "--plugin-dir", str(tmp_path))
    assert "my-sgd" in listed.stdout and "from local" in listed.stdout
    proc = optbench("grid", "--plugin-dir", str(tmp_path), "--tasks", "pi", "--optimizers", "my-sgd",
                    "--steps", "150", "--out", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    s = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert s["final_target_metric"].iloc[0] == pytest.approx((3.14159265 - 2.98987) ** 2, abs=1e-3)
    blocked = optbench("list", "-p", "no:toy_tasks")
    assert "  pi " not in blocked.stdout and "  adam " in blocked.stdout
