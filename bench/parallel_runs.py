"""Catalog throughput: runs one after another on every thread, against the same runs two
at once on one thread each, side by side in one invocation.

`python -m bench.parallel_runs [--recipe slimgpt/paper] [--seeds 1,2] [--repeats 1] [OVERRIDE ...]`

The same runs (one per seed, `scale=cpu`, into a fresh results folder each way) are made
two ways: "serial", each `slimexp` process after the other with torch's default thread
count (what `experiments/reproduce.sh` and `catalog seeds` do); "parallel", all at once
with `OMP_NUM_THREADS=1` (what `hydra/launcher=joblib_local` with one thread a worker
would do). Prints the wall time of each way, the ratio parallel / serial, and the largest
relative difference between the two ways of any metric, any window's NLL or document's
score, and the per-layer pruning record (the thread count is not hashed into a run key,
so a number it moves beyond 1e-6 relative is a protocol change the record must name).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARTS = ("metrics", "evidence", "widths")


def _command(recipe: str, seed: int, results_dir: str, overrides: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "slimexp.cli", f"recipe={recipe}", "scale=cpu", f"seed={seed}",
        f"results.dir={results_dir}", "logger=disabled", *overrides,
    ]  # fmt: skip


def _made(commands: list[list[str]], together: bool) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if together else dict(os.environ)
    start = time.perf_counter()
    if together:
        processes = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL) for c in commands]
        codes = [p.wait() for p in processes]
    else:
        codes = [subprocess.run(c, env=env, stdout=subprocess.DEVNULL).returncode for c in commands]
    if any(codes):
        raise SystemExit(f"a run failed (exit codes {codes}); run one of these alone to see why: {commands[0]}")
    return time.perf_counter() - start


def _results(results_dir: str) -> dict[str, dict]:
    """run key -> {metrics (times and memory left out), evidence, widths} of every record."""
    out = {}
    for path in Path(results_dir, "runs").glob("*.json"):
        record = json.loads(path.read_text())
        metrics = {k: v for k, v in record["metrics"].items() if not k.startswith(("time/", "mem/"))}
        out[record["run_key"]] = {"metrics": metrics, **{part: record.get(part) for part in PARTS[1:]}}
    return out


def _leaves(x, y, name: str):
    """(name, x, y) for every pair of leaves of two nested dicts/lists."""
    if isinstance(x, dict) and isinstance(y, dict):
        for key in sorted(x.keys() | y.keys()):
            yield from _leaves(x.get(key), y.get(key), f"{name}/{key}")
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y)):
            yield from _leaves(u, v, f"{name}[{i}]")
    else:
        yield name, x, y


def largest_difference(a, b) -> tuple[float, str]:
    """(largest relative difference, where) over every leaf; inf where one is missing or not a number."""
    worst, where = 0.0, ""
    for name, x, y in _leaves(a, b, ""):
        if x == y:
            continue
        numbers = isinstance(x, (int, float)) and isinstance(y, (int, float)) and x != 0
        relative = abs(x - y) / abs(x) if numbers else float("inf")
        if relative > worst:
            worst, where = relative, f"{name}: {x!r} against {y!r}"
    return worst, where


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="slimgpt/paper")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. prune.ratio=0.5")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]

    seconds: dict[str, list[float]] = {"serial": [], "parallel": []}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="slimexp-bench-") as tmp:
        for repeat in range(args.repeats):
            for way in ("serial", "parallel") if repeat % 2 == 0 else ("parallel", "serial"):
                folder = os.path.join(tmp, f"{way}-{repeat}")
                commands = [_command(args.recipe, seed, folder, args.overrides) for seed in seeds]
                seconds[way].append(_made(commands, together=way == "parallel"))
                results[way] = _results(folder)
                print(f"{way:8s} pass {repeat + 1}: {seconds[way][-1]:7.1f} s", flush=True)
    serial, parallel = min(seconds["serial"]), min(seconds["parallel"])
    print(f"{args.recipe}, seeds {seeds}, scale=cpu {' '.join(args.overrides)}: fastest of {args.repeats}")
    print(f"serial (default threads) {serial:7.1f} s   parallel ({len(seeds)} x 1 thread) {parallel:7.1f} s   "
          f"ratio {parallel / serial:.3f}")  # fmt: skip
    print(f"largest relative difference, parallel against serial ({len(results['serial'])} runs):")
    for part in PARTS:
        worst, where = largest_difference(
            {key: r[part] for key, r in results["serial"].items()},
            {key: r[part] for key, r in results["parallel"].items()},
        )
        print(f"  {part:9s} {worst:.3g}{'  at ' + where if where else ''}")


if __name__ == "__main__":
    main()
