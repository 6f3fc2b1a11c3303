"""Column names and version of what a grid writes.  Readers check the version.

A results folder (``optbench grid --out DIR``) holds:

``runs/<key>.json``  one file per finished run, written atomically:
    ``{"schema": SCHEMA_VERSION, "summary": {...}, "records": {column: [values]}}``
``runs.parquet``     all per-step records, long format: RUN_COLUMNS + ``run_key``
                     + task metric columns (``w``, ``w0``, ``val_loss`` ...; NaN where absent)
``summary.csv``      one row per run: SUMMARY_COLUMNS
``convergence.csv``  per (task, optimizer, hparams, scheduler, grad_mode, clip): mean and 95 % CI over seeds
``speed.csv``        the same grouping, for time and memory
``meta.json``        environment, resolved grid, plugin versions, ``schema``
"""

SCHEMA_VERSION = 1

#: per-step columns every run records; tasks add their own metric columns
STEP_COLUMNS = ("step", "loss", "grad_norm", "lr", "step_time")

#: the axes of the grid: one run per distinct combination
AXES = ("task", "optimizer", "hparams", "scheduler", "grad_mode", "clip", "seed")

#: columns of summary.csv, in order
SUMMARY_COLUMNS = (
    "run_key",
    *AXES,
    "lr",
    "task_version",
    "optimizer_dist",
    "optimizer_version",
    "status",  # ok | diverged | failed | timeout | skipped
    "reason",  # one line; the full traceback, if any, is in runs/<key>.json
    "steps",  # optimizer steps actually taken
    "final_loss",
    "best_loss",
    "final_target_metric",
    "best_target_metric",
    "steps_to_target",  # first step at or below the task's target, NaN if never
    "time_to_target",  # seconds of training time to that step
    "oscillations",  # sign changes of the loss slope (see runner.oscillations)
    "time_per_step",  # median seconds per optimizer step
    "total_time",
    "tokens_per_s",
    "frac_of_peak",  # achieved FLOP/s over the machine's measured fp32 matmul peak
    "opt_state_bytes",
    "param_bytes",
    "peak_mem_bytes",  # CUDA max allocated, or on CPU growth of process RSS over the run (after malloc_trim)
    "device",
    "threads",
    "config_hash",  # hash of the resolved run config (provenance)
)

#: metrics aggregated over seeds in convergence.csv (mean, ci95, n)
CONVERGENCE_METRICS = (
    "final_loss",
    "best_loss",
    "final_target_metric",
    "steps_to_target",
    "time_to_target",
    "oscillations",
)

#: metrics aggregated over seeds in speed.csv
SPEED_METRICS = ("time_per_step", "total_time", "tokens_per_s", "frac_of_peak", "opt_state_bytes", "peak_mem_bytes")
