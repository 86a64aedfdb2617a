"""`make device-check`: the pruning methods on a CUDA device against the CPU, and their
cost at LLaMA-7B scale.

(a) SmolLM2-135M at the `scale=cpu` protocol (each method's paper recipe, ratio 0.2):
    pruned on the device and, in a second process at the same time, on the CPU; the two
    must remove the same heads and channels in every layer (flips that are near-ties
    are listed with their margins, see bench/device_compare.py) and give the same
    WikiText-2 perplexity within 1% relative.
(b) A random-weight model of LLaMA-7B geometry (hidden 4096, 32 heads, FFN 11008), a few
    decoder layers, float16, each method's paper calibration shape on synthetic tokens:
    pruning time and peak device memory per layer, beside the planner's prediction.
(c) The same for a GQA geometry (Llama-3-8B: 32 heads over 8 KV heads, FFN 14336).

`--cpu` checks the code path without a GPU: (a) compares the CPU with the CPU (both
single-threaded, so it checks determinism, not a device), with 8 × 64 calibration and 8
perplexity windows; (b) and (c) use the same head structure shrunk to hidden 256 in
float32, 2 layers, 8 × 64 calibration. Results: results.json and table.md in `--out`.
Exit status 1, with one line saying why, when a check fails; everything measured is
written first.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before torch imports tqdm: the table, no progress bars

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from bench.device_compare import compare, selections_to_json  # noqa: E402
from bench.device_table import markdown  # noqa: E402

METHODS = ("slimgpt", "slimllm", "flap", "llm_pruner", "wanda_sp")
GEOMETRIES = {
    "b": {
        "name": "llama-7b",
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32000,
    },
    "c": {
        "name": "llama3-8b",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
    },
}
# --cpu: the same heads and KV groups and FFN/hidden ratio, hidden 256 (head_dim 8).
SHRUNK = {"hidden_size": 256, "vocab_size": 1024}
CPU_CALIB = (8, 64)
CPU_PPL_WINDOWS = 8


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="no GPU: CPU against CPU, shrunken geometry (slow tests)")
    parser.add_argument("--out", default="results/device_check", help="folder for results.json and table.md")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names")
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--parts", default="abc", help="which parts to run (a, b, c)")
    parser.add_argument("--layers", type=int, help="decoder layers of (b)/(c) models (default 4; --cpu 2)")
    parser.add_argument("--near-tie", type=float, default=0.01, help="flip margin (σ of the scores) judged a tie")
    parser.add_argument("--ppl-tolerance", type=float, default=0.01, help="relative perplexity difference allowed")
    parser.add_argument(
        "--max-calib-tokens", type=int, help="(b)/(c): cap n_samples so n_samples × seqlen stays under this"
    )
    parser.add_argument(
        "--reference-timeout", type=float, help="seconds to wait for the CPU runs of (a) at the end (360; --cpu 900)"
    )
    parser.add_argument("--reference", help=argparse.SUPPRESS)  # internal: part (a) on the CPU, configs file
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    if args.layers is None:
        args.layers = 2 if args.cpu else 4
    if args.reference_timeout is None:
        args.reference_timeout = 900 if args.cpu else 360
    return args


# ------------------------------------------------------------------------- configs


def resolve(method: str, ratio: float, scale: str, extra: list[str]) -> dict:
    from slimexp.precheck import resolved_jobs

    ((_, config),) = resolved_jobs([f"recipe={method}/paper", f"prune.ratio={ratio}", f"scale={scale}", *extra])
    return config


def part_a_configs(args) -> dict[str, dict]:
    extra = []
    if args.cpu:
        extra = [
            f"calib.n_samples={CPU_CALIB[0]}",
            f"calib.seqlen={CPU_CALIB[1]}",
            f"eval.ppl.max_windows={CPU_PPL_WINDOWS}",
        ]
    return {m: resolve(m, args.ratio, "cpu", extra) for m in args.methods}


def calibration_shape(config: dict, args) -> tuple[int, int, int, str | None]:
    """(n_samples, seqlen, batch_size, cap note) for (b)/(c)."""
    calib = config["calib"]
    n, seqlen = calib["n_samples"], calib["seqlen"]
    note = None
    if args.cpu:
        n, seqlen = min(n, CPU_CALIB[0]), min(seqlen, CPU_CALIB[1])
    elif args.max_calib_tokens and n * seqlen > args.max_calib_tokens:
        n = max(1, args.max_calib_tokens // seqlen)
        note = f"capped from {calib['n_samples']} × {seqlen}"
    return n, seqlen, min(calib["batch_size"], n), note


def settings_of(config: dict):
    from slimexp.pruning.api import PruneSettings

    p = config["prune"]
    return PruneSettings(p["attn_unit"], p["rounding"], p["absorb_rounding"])


# ------------------------------------------------------------------------- part (a)


def prune_smollm(config: dict, device: str) -> dict:
    """Prune SmolLM2 as the pipeline does (model on the CPU, one layer on `device`), then
    its WikiText-2 perplexity on `device`."""
    from slimexp.checks import build_method, build_schedule
    from slimexp.data.calibration import sample_as_configured
    from slimexp.evaluation.perplexity import perplexity
    from slimexp.models.loader import load_model
    from slimexp.pruning.api import prune

    model, tokenizer = load_model(config["model"], config["dtype"], config["seed"])
    calib, ppl = config["calib"], config["eval"]["ppl"]
    calibration = sample_as_configured(tokenizer, calib, config["data"]["dir"], config["seed"]).input_ids
    method = build_method(config["method"])
    start = time.perf_counter()
    result = prune(
        model,
        method=method,
        ratio=config["prune"]["ratio"],
        schedule=build_schedule(config["schedule"]),
        calibration=calibration,
        settings=settings_of(config),
        device=device,
        batch_size=calib["batch_size"],
    )
    prune_s = time.perf_counter() - start
    value, protocol = perplexity(
        model.to(device), tokenizer, "wikitext2", config["data"]["dir"], ppl["seqlen"], ppl["max_windows"],
        ppl["batch_size"], device, bos=ppl.get("bos", "stream"),
    )  # fmt: skip
    return {
        "order": method.order,
        "calibration": f"{calib['n_samples']}x{calib['seqlen']}",
        "prune_s": prune_s,
        "achieved_ratio": result.achieved_ratio,
        "ppl_wikitext2": value,
        "ppl_windows": protocol["windows"],
        "selections": selections_to_json(result.selections),
    }


def run_part_a(configs: dict[str, dict], device: str, save=None) -> dict[str, dict]:
    runs = {}
    for name, config in configs.items():
        try:
            runs[name] = prune_smollm(config, device)
        except Exception as err:  # recorded; the check fails at the end
            runs[name] = {"error": f"{type(err).__name__}: {err}"}
        if save:
            save(runs)
    return runs


def reference_main(args) -> None:
    """The reference process: part (a) on the CPU, written after each method."""
    configs = json.loads(Path(args.reference).read_text())
    out = Path(args.out) / "part_a_reference.json"

    def save(runs):
        out.write_text(json.dumps(runs))

    run_part_a(configs, "cpu", save)


def start_reference(args, configs: dict, out: Path, threads: int) -> subprocess.Popen:
    path = out / "part_a_configs.json"
    path.write_text(json.dumps(configs))
    command = [sys.executable, "-m", "bench.device_check", "--reference", str(path), "--out", str(out)]
    command += ["--threads", str(threads)]
    log = open(out / "reference.log", "w")
    repo = Path(__file__).resolve().parents[1]
    return subprocess.Popen(command, cwd=repo, stdout=log, stderr=subprocess.STDOUT)


def compare_part_a(reference: dict, device_runs: dict, args) -> dict[str, dict]:
    rows = {}
    for name in args.methods:
        missing = {"error": "the CPU reference process gave no result (see reference.log)"}
        ref, dev = reference.get(name, missing), device_runs[name]
        row = {k: v for k, v in dev.items() if k != "selections"}
        row["reference"] = {k: v for k, v in ref.items() if k != "selections"}
        if "error" in ref or "error" in dev:
            row["verdict"] = "ERROR"
            rows[name] = row
            continue
        row["selection"] = compare(ref["selections"], dev["selections"], dev["order"], args.near_tie)
        rel = abs(dev["ppl_wikitext2"] - ref["ppl_wikitext2"]) / ref["ppl_wikitext2"]
        row["ppl_rel_diff"] = rel
        ok_sel = row["selection"]["identical"] or row["selection"]["near_ties_only"]
        ok_ppl = rel <= args.ppl_tolerance
        row["verdict"] = "ok" if ok_sel and ok_ppl else "MISMATCH"
        rows[name] = row
    return rows


# -------------------------------------------------------------------- parts (b)/(c)


class LayerMeter:
    """`on_layer` callback: seconds and peak device memory of each layer's work, and the
    peak outside any layer (capture, LLM-Pruner's backward pass, schedule passes)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.seconds: dict[int, float] = {}
        self.peak: dict[int, int] = {}
        self.outside_peak = 0
        self._start = 0.0

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def begin(self):
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def finish(self):
        self._sync()
        if self.cuda:
            self.outside_peak = max(self.outside_peak, torch.cuda.max_memory_allocated())

    def __call__(self, index: int, what: str) -> None:
        self._sync()
        if what == "start":
            if self.cuda:
                self.outside_peak = max(self.outside_peak, torch.cuda.max_memory_allocated())
                torch.cuda.reset_peak_memory_stats()
            self._start = time.perf_counter()
            return
        self.seconds[index] = self.seconds.get(index, 0.0) + time.perf_counter() - self._start
        if self.cuda:
            self.peak[index] = max(self.peak.get(index, 0), torch.cuda.max_memory_allocated())


def geometry_of(part: str, args) -> dict:
    geometry = {k: v for k, v in GEOMETRIES[part].items() if k != "name"}
    if args.cpu:
        ffn_ratio = geometry["intermediate_size"] / geometry["hidden_size"]
        geometry.update(SHRUNK, intermediate_size=int(round(SHRUNK["hidden_size"] * ffn_ratio)))
    geometry["head_dim"] = geometry["hidden_size"] // geometry["num_attention_heads"]
    geometry["num_hidden_layers"] = args.layers
    return geometry


def build_random(geometry: dict, dtype: torch.dtype, device: str, seqlen: int):
    """A random LlamaForCausalLM, initialised on `device` in `dtype`, then kept on the CPU
    as the pipeline keeps a model (the engine moves one layer at a time)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**geometry, max_position_embeddings=max(4096, seqlen), tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    return model.to("cpu").eval()


def planned(config: dict) -> dict:
    """The planner's prediction of the prune phase, or why there is none."""
    try:
        from slimexp.planner import plan_run
    except ImportError as err:
        return {"available": False, "error": f"slimexp.planner not importable: {err}"}
    try:
        phase = plan_run(config).phase("prune")
    except Exception as err:  # a prediction is optional; the measurement is the point
        return {"available": True, "error": f"{type(err).__name__}: {err}"}
    return {
        "available": True,
        "accelerator_bytes": phase.accelerator_bytes,
        "host_bytes": phase.host_bytes,
        "seconds": phase.seconds,
    }


def plan_config(config: dict, geometry: dict, shape: tuple[int, int, int], dtype: str, device: str) -> dict:
    """The resolved paper-scale config with the model, dtype, device and calibration that ran."""
    planned_cfg = copy.deepcopy(config)
    random_config = {"model_type": "llama", **geometry}
    planned_cfg["model"].update(name="random-" + dtype, source="random", hf_id=None, random_config=random_config)
    planned_cfg["calib"].update(n_samples=shape[0], seqlen=shape[1], batch_size=shape[2])
    planned_cfg.update(dtype=dtype, device=device)
    return planned_cfg


def prune_random(part: str, method_name: str, args, device: str) -> dict:
    """One method on the random model of `part`, synthetic calibration tokens."""
    from slimexp.checks import build_method, build_schedule
    from slimexp.pruning.api import prune

    config = resolve(method_name, args.ratio, "paper", [])
    geometry = geometry_of(part, args)
    n, seqlen, batch, cap = shape = calibration_shape(config, args)
    dtype = "float32" if args.cpu else "float16"
    model = build_random(geometry, getattr(torch, dtype), device, seqlen)
    generator = torch.Generator().manual_seed(0)
    calibration = torch.randint(0, geometry["vocab_size"], (n, seqlen), generator=generator)
    meter = LayerMeter(cuda=device == "cuda")
    meter.begin()
    start = time.perf_counter()
    result = prune(
        model,
        method=build_method(config["method"]),
        ratio=args.ratio,
        schedule=build_schedule(config["schedule"]),
        calibration=calibration,
        settings=settings_of(config),
        device=device,
        batch_size=batch,
        on_layer=meter,
    )
    meter.finish()
    total = time.perf_counter() - start
    layers = sorted(meter.seconds)
    return {
        "geometry": GEOMETRIES[part]["name"] + (" (shrunk)" if args.cpu else ""),
        "model": geometry,
        "dtype": dtype,
        "calibration": f"{n}x{seqlen}",
        "batch_size": batch,
        "cap": cap,
        "prune_s": total,
        "layer_s": [meter.seconds[i] for i in layers],
        "outside_layers_s": total - sum(meter.seconds.values()),
        "layer_peak_bytes": [meter.peak.get(i) for i in layers] if meter.cuda else None,
        "peak_bytes": max([meter.outside_peak, *meter.peak.values()]) if meter.cuda else None,
        "achieved_ratio": result.achieved_ratio,
        "planned": planned(plan_config(config, geometry, shape[:3], dtype, device)),
    }


def run_part_bc(part: str, args, device: str, rows: dict, save) -> None:
    """Fill `rows` (method → measurements), saving after each method."""
    for name in args.methods:
        try:
            rows[name] = prune_random(part, name, args, device)
        except Exception as err:  # recorded; the check fails at the end
            rows[name] = {"error": f"{type(err).__name__}: {err}"}
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
        save()


# ---------------------------------------------------------------------------- main


def wait_reference(proc: subprocess.Popen | None, out: Path, timeout: float) -> dict:
    if proc is None:
        return {}
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    path = out / "part_a_reference.json"
    return json.loads(path.read_text()) if path.exists() else {}


def failures(results: dict) -> list[str]:
    """One phrase per check that failed."""
    bad = []
    for name, row in results.get("part_a", {}).items():
        if row.get("verdict") == "ERROR":
            bad.append(f"(a) {name}: {row.get('error') or row['reference'].get('error')}")
        elif row.get("verdict") != "ok":
            worst, rel = row["selection"]["worst_margin_sigma"], row["ppl_rel_diff"]
            bad.append(f"(a) {name}: worst judged flip {worst:.2e} σ, perplexity differs by {rel:.2%}")
    for part in ("b", "c"):
        for name, row in results.get(f"part_{part}", {}).items():
            if "error" in row:
                bad.append(f"({part}) {name}: {row['error']}")
    return bad


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores)"


def run_all(args, device: str, out: Path, results: dict, save) -> None:
    proc, device_runs = None, {}
    if "a" in args.parts:
        configs = part_a_configs(args)
        threads = 1 if args.cpu else max(1, (os.cpu_count() or 2) - torch.get_num_threads())
        proc = start_reference(args, configs, out, threads)
        try:
            device_runs = run_part_a(configs, device)
            (out / "part_a_device.json").write_text(json.dumps(device_runs))
        except BaseException:
            proc.kill()
            raise
    for part in "bc":
        if part in args.parts:
            run_part_bc(part, args, device, results.setdefault(f"part_{part}", {}), save)
    if proc is not None:
        reference = wait_reference(proc, out, args.reference_timeout)
        results["part_a"] = compare_part_a(reference, device_runs, args)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.reference:
        torch.set_num_threads(args.threads or 1)
        reference_main(args)
        return 0
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("device-check: no CUDA device here; `make device-check ARGS=--cpu` runs the CPU check", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1 if args.cpu else 2)
    results = {
        "mode": "cpu (CPU against CPU: code path and determinism, no device)" if args.cpu else "cuda",
        "device": device_name(device),
        "torch": torch.__version__,
        "ratio": args.ratio,
        "near_tie_sigma": args.near_tie,
        "ppl_tolerance": args.ppl_tolerance,
        "layers_bc": args.layers,
    }

    def save():
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))

    start = time.perf_counter()
    run_all(args, device, out, results, save)
    results["wall_s"] = time.perf_counter() - start
    save()
    table = markdown(results)
    (out / "table.md").write_text(table)
    print(table)
    bad = failures(results)
    if bad:
        print(f"device-check: FAIL ({len(bad)}): " + "; ".join(bad), file=sys.stderr)
        return 1
    print(f"device-check: ok in {results['wall_s']:.0f} s; {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
