"""Planner accuracy: each paper recipe run for real on SmolLM2 (scale=cpu, prune.ratio 0.2,
no evaluation), its record's plan (made by the run itself before loading, with the matmul
throughput measured then) beside what it measured: peak resident memory of the pruning
phase and its wall time. Targets: memory within ±25%, time within a factor 2.

`python -m bench.planner [--methods slimgpt,flap] [--ratio 0.2]`; `make bench` runs it
after the cost table. Each run takes minutes on a 2-core CPU (SlimGPT the longest).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

METHODS = ("slimgpt", "slimllm", "flap", "llm_pruner", "wanda_sp")
TARGETS = {"memory": (0.75, 1.25), "time": (0.5, 2.0)}


def run_recipe(method: str, ratio: float, model: str, store: Path) -> dict:
    env = {**os.environ, "SLIMEXP_RESULTS_DIR": str(store), "HF_HUB_OFFLINE": "1"}
    overrides = [f"recipe={method}/paper", f"prune.ratio={ratio}", f"model={model}", "eval=none"]
    out = subprocess.run(
        [sys.executable, "-m", "slimexp.cli", *overrides, f"hydra.run.dir={store}/outputs/{method}"],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
    records = [json.loads(p.read_text()) for p in (store / "runs").glob("*.json")]
    return next(r for r in records if r["method"] == method and r["status"] == "done")


def compare(record: dict) -> dict:
    """Planned vs measured for the pruning phase of one record."""
    planned, metrics = record["plan"]["phases"]["prune"], record["metrics"]
    measured_s = metrics["time/prune_s"] + metrics.get("time/schedule_s", 0.0)
    return {
        "method": record["method"],
        "host_plan_gb": planned["host_gb"],
        "host_meas_gb": metrics["mem/prune_peak_rss_gb"],
        "host_ratio": planned["host_gb"] / metrics["mem/prune_peak_rss_gb"],
        "time_plan_s": planned["seconds"],
        "time_meas_s": measured_s,
        "time_ratio": planned["seconds"] / measured_s,
        "gflops": record["plan"]["tflops"] * 1e3,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--ratio", type=float, default=0.2)
    args = parser.parse_args(argv)
    print(
        f"planner: {args.model}, paper recipes at ratio {args.ratio}, scale=cpu; pruning phase planned vs measured; "
        f"targets: host ratio in {TARGETS['memory']}, time ratio in {TARGETS['time']}"
    )
    header = (
        "method",
        "host_plan_gb",
        "host_meas_gb",
        "host_ratio",
        "time_plan_s",
        "time_meas_s",
        "time_ratio",
        "gflops",
    )
    print(" ".join(f"{h:>13}" for h in header), flush=True)
    with tempfile.TemporaryDirectory(prefix="slimexp-bench-plan-") as folder:
        for method in args.methods.split(","):
            try:
                row = compare(run_recipe(method, args.ratio, args.model, Path(folder) / method))
            except RuntimeError as err:
                print(f"{method:>13} failed: {err}", flush=True)
                continue
            cells = [f"{row[h]:>13.2f}" if isinstance(row[h], float) else f"{row[h]:>13}" for h in header]
            print(" ".join(cells), flush=True)


if __name__ == "__main__":
    main()
