"""One run: load → calibrate → prune → evaluate → record.

`resolve_config` turns the composed Hydra config into the plain dict that is hashed into
the run key and stored: scale caps and model substitution applied, derived facts (data
source) filled in, so the record says what actually ran.
"""

from __future__ import annotations

import copy
import json
import logging
import signal
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import torch

from slimexp.checks import (  # noqa: F401  (validate_config, resolve_device: the pipeline's API)
    build_method,
    build_schedule,
    model_path,
    preflight,
    resolve_device,
    uses_calibration,
    validate_config,
)
from slimexp.data.calibration import CalibrationSet, sample_as_configured
from slimexp.data.manifest import local_slice
from slimexp.data.sources import data_source, load_texts, spec
from slimexp.errors import SlimexpError
from slimexp.evaluation.cost import PeakMemory, PhaseTimer, model_bytes, total_params
from slimexp.evaluation.latency import latency
from slimexp.evaluation.layer_error import ffn_output_mse, ffn_outputs
from slimexp.evaluation.perplexity import PAPER_PROTOCOL, scored_windows, token_windows
from slimexp.evaluation.zeroshot import zeroshot
from slimexp.finetune.lora import finetune_lora
from slimexp.models.adapters import adapter_for
from slimexp.models.checkpoint import save_pruned
from slimexp.models.loader import (
    context_length,
    load_model,
    load_tokenizer,
    model_config_by_name,
    provenance,
    torch_dtype,
)
from slimexp.models.placement import dense_reference_fits, place
from slimexp.planner import plan_summary
from slimexp.pruning import surgery
from slimexp.pruning.api import PruneSettings, prune
from slimexp.tracking.store import (
    ResultsStore,
    declared_source_windows,
    environment_info,
    run_key,
    seed_independent,
)
from slimexp.tracking.wandb_logger import RECORD_KEY, WandbLogger

log = logging.getLogger(__name__)

# A dense run does not depend on these: one dense record serves every ratio of a sweep.
# Recovery tuning is for pruned models: a table sweeping `finetune` gets its dense
# reference row once, untuned, as in the papers.
DENSE_IRRELEVANT = ("prune", "calib", "schedule", "recipe", "variant", "finetune")


def _cap(value: int | None, cap: int | None) -> int | None:
    if cap is None:
        return value
    return cap if value is None else min(value, cap)


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    """Idempotent: resolving a resolved config changes nothing."""
    config = copy.deepcopy(config)
    scale = config["scale"]
    if config["dtype"] == "auto":
        config["dtype"] = scale["dtype"]
    requested = config["model"]["name"]
    substitute = (scale.get("model_substitutes") or {}).get(requested)
    if substitute and substitute != requested:
        config["model"] = {**model_config_by_name(substitute), "substitutes_for": requested}
    calib = config.get("calib")  # a resolved dense config has none
    if calib is not None:
        calib["n_samples"] = _cap(calib["n_samples"], scale.get("calib_max_samples"))
        calib["seqlen"] = _cap(calib["seqlen"], scale.get("calib_max_seqlen"))
        held_windows = declared_source_windows(config, calib)
        if held_windows is not None and calib["sampling"] == "stream":
            calib["n_samples"] = _cap(calib["n_samples"], held_windows)
    ppl = config["eval"]["ppl"]
    ppl["max_windows"] = _cap(ppl.get("max_windows"), scale.get("ppl_max_windows"))
    finetune = config.get("finetune") or {}
    if finetune.get("name", "none") != "none":
        finetune["max_steps"] = _cap(finetune.get("max_steps"), scale.get("finetune_max_steps"))
        if scale.get("finetune_max_steps") is not None:  # a capped run warms up for a tenth of its steps
            finetune["warmup_steps"] = min(finetune["warmup_steps"], max(1, finetune["max_steps"] // 10))
    method = config["method"]
    if scale.get("prune_train_max_steps") is not None and "max_steps" in method and "prune_freq" in method:
        # A method that trains while pruning (LoRAPrune): the capped run keeps about 25
        # pruning steps (the authors' ~300 steps at prune_freq 10) by pruning more often.
        method["max_steps"] = _cap(method["max_steps"], scale["prune_train_max_steps"])
        method["prune_freq"] = min(method["prune_freq"], max(1, method["max_steps"] // 25))
    if "micro_batch_size" in method and "max_steps" in method:
        method["batch_size"] = _cap(method["batch_size"], scale.get("prune_train_max_batch"))
        method["micro_batch_size"] = min(method["micro_batch_size"], method["batch_size"])
    latency_cfg = config["eval"].get("latency") or {}
    if latency_cfg.get("enabled"):
        latency_cfg["repeats"] = _cap(latency_cfg["repeats"], scale.get("latency_max_repeats"))
    zeroshot = config["eval"].get("zeroshot") or {}
    if zeroshot.get("tasks"):
        zeroshot["limit"] = _cap(zeroshot.get("limit"), scale.get("zeroshot_limit"))
    config["data"]["source"] = data_source(config["data"]["dir"])
    if config["method"]["name"] == "dense":
        for key in DENSE_IRRELEVANT:
            config.pop(key, None)
        if seed_independent(config):  # a sweep over seeds asks for this one run, computed once
            config["seed"] = 0
    return config


def _check_seqlen(name: str, seqlen: int, model) -> None:
    limit = context_length(model)
    if limit and seqlen > limit:
        raise SlimexpError(f"{name} {seqlen} exceeds the model's context of {limit} tokens")


def prepare_inputs(config: dict[str, Any], timer: PhaseTimer) -> CalibrationSet | None:
    """The calibration set, drawn before any weight is loaded (and before a record is
    written): calibration larger than the data is a bad input, not a failed run."""
    if not uses_calibration(config):
        return None
    calib = config["calib"]
    tokenizer = load_tokenizer(config["model"])
    with timer.phase("calib"):
        calib_set = sample_as_configured(tokenizer, calib, config["data"]["dir"], config["seed"])
    held = (
        local_slice(config["data"]["dir"], calib["dataset"], calib_set.protocol["split"])
        if config["data"]["dir"]
        else None
    )
    if held is not None:  # drawn from the first rows only, where the papers drew from the whole split
        calib_set.protocol["data_slice"] = f"{held.slice}: {held.describe()}"
    return calib_set


def prune_model(
    model, config: dict[str, Any], device, timer: PhaseTimer, calib_set: CalibrationSet | None
) -> dict[str, Any]:
    """Prune in place; returns the pruning facts for the record (plan, widths, settings)."""
    method = build_method(config["method"])
    if method.name == "dense":
        adapter = adapter_for(model)
        layers = [surgery.widths(layer, adapter) for layer in adapter.layers(model)]
        return {"method": method.describe(), "layers": layers}
    prune_cfg = config["prune"]
    if calib_set is not None:
        _check_seqlen("calib.seqlen", config["calib"]["seqlen"], model)
    settings = PruneSettings(prune_cfg["attn_unit"], prune_cfg["rounding"], prune_cfg["absorb_rounding"])
    with PeakMemory(cuda=False) as prune_memory:
        result = prune(
            model,
            method=method,
            ratio=prune_cfg["ratio"],
            schedule=build_schedule(config["schedule"]),
            calibration=calib_set.input_ids if calib_set is not None else None,
            settings=settings,
            device=device,
            batch_size=config["calib"]["batch_size"],
        )
    for phase, seconds in result.seconds.items():
        timer.seconds[phase] = timer.seconds.get(phase, 0.0) + seconds
    return {
        "method": result.method,
        "schedule": result.schedule,
        "planned_ratio": result.planned_ratio,
        "calibration": calib_set.protocol if calib_set is not None else None,
        "notes": result.notes,  # e.g. an attention cut that rounded to nothing in every layer
        "layers": result.layers,
        "prune_peak_rss_gb": prune_memory.peak_rss / 2**30,
    }


def evaluate(
    model, tokenizer, config: dict[str, Any], device, timer: PhaseTimer, load_dense=None
) -> tuple[dict, dict, list]:
    """(metrics, protocol, per-task zero-shot rows, evidence). `load_dense`, for a pruned
    model, returns the dense model that latency is timed beside. The evidence holds, per
    metric key, what the metric is a mean of (window NLLs, document correctness)."""
    metrics, protocol, tasks, evidence = {}, {}, [], {}
    ppl_cfg = config["eval"]["ppl"]
    if ppl_cfg["datasets"]:
        _check_seqlen("eval.ppl.seqlen", ppl_cfg["seqlen"], model)
    with timer.phase("eval"):
        for dataset in ppl_cfg["datasets"]:
            value, details, evidence[f"ppl/{dataset}"] = scored_windows(
                model,
                tokenizer,
                dataset,
                config["data"]["dir"],
                ppl_cfg["seqlen"],
                ppl_cfg["max_windows"],
                ppl_cfg["batch_size"],
                device,
                bos=ppl_cfg.get("bos", "stream"),
            )
            metrics[f"ppl/{dataset}"] = value
            protocol[f"ppl/{dataset}"] = details
    lat = config["eval"].get("latency") or {}
    if lat.get("enabled"):
        with timer.phase("latency"):
            dense = load_dense() if lat.get("dense_reference") and load_dense is not None else None
            skipped = dense if isinstance(dense, str) else None
            dense = None if skipped else dense
            values, protocol["latency"] = latency(
                model, lat, device, model.get_input_embeddings().num_embeddings, dense
            )
            if skipped:
                protocol["latency"]["dense_reference_skipped"] = skipped
            del dense
        if lat.get("dense_reference") and load_dense is None:  # the dense model itself
            values.update({"latency/prefill_ratio": 1.0, "latency/decode_ratio": 1.0})
        metrics.update(values)
    zs = config["eval"].get("zeroshot") or {}
    if zs.get("tasks"):
        with timer.phase("zeroshot"):
            values, protocol["zeroshot"], tasks, documents = zeroshot(
                model,
                tokenizer,
                list(zs["tasks"]),
                config["data"]["dir"],
                zs.get("limit"),
                zs["batch_size"],
                device,
                zs["scoring"],
            )
        metrics.update(values)
        evidence.update({f"zeroshot/{task}": entry for task, entry in documents.items()})
    return metrics, protocol, tasks, evidence


def layer_error_probe(model, tokenizer, config: dict[str, Any], device) -> dict[str, Any] | None:
    """Dense FFN outputs on the first evaluation windows, taken before pruning."""
    cfg = config["eval"].get("layer_error") or {}
    if not cfg.get("enabled"):
        return None
    dataset, seqlen = cfg["dataset"], config["eval"]["ppl"]["seqlen"]
    split_joiner = PAPER_PROTOCOL.get(dataset, {"split": spec(dataset).default_split, "joiner": "\n\n"})
    texts = load_texts(dataset, split_joiner["split"], config["data"]["dir"])
    windows = token_windows(tokenizer, texts, split_joiner["joiner"], seqlen, cfg["windows"])
    home = next(model.parameters()).device
    dense = ffn_outputs(model.to(device), windows, device)
    model.to(home)
    protocol = {
        "dataset": dataset,
        **split_joiner,
        "seqlen": seqlen,
        "windows": len(windows),
        "error": "mean squared FFN output difference",
    }
    return {"windows": windows, "dense": dense, "protocol": protocol}


def recover(model, tokenizer, config: dict[str, Any], device, timer: PhaseTimer, record: dict, logger: WandbLogger):
    """LoRA recovery when the config asks for it (the model it returns is merged)."""
    finetune = config.get("finetune") or {}
    if finetune.get("name", "none") == "none":
        return model
    with timer.phase("finetune"):
        model, record["training"] = finetune_lora(
            model,
            tokenizer,
            finetune,
            config["data"]["dir"],
            device,
            config["seed"],
            on_step=lambda step, loss: logger.log({"train/loss": loss}, step=step),
        )
    return model


def size_metrics(model, dense: dict[str, int], pruning: dict[str, Any]) -> dict[str, float]:
    """Parameters before and after, the achieved ratio, bytes, and what the cut removed."""
    decoder = surgery.decoder_params(model, adapter_for(model))
    return {
        "params/total": total_params(model),
        "params/dense_total": dense["total"],
        "params/decoder": decoder,
        "params/dense_decoder": dense["decoder"],
        "params/achieved_ratio": 1 - decoder / dense["decoder"],
        "params/model_bytes": model_bytes(model),
        # What the cut removed (a planned cut can round to no unit: Gemma's single KV group).
        "prune/attn_units_removed": sum(int(layer.get("attn_units", 0)) for layer in pruning["layers"]),
        "prune/ffn_channels_removed": sum(int(layer.get("ffn_channels", 0)) for layer in pruning["layers"]),
    }


def dense_loader(config: dict[str, Any], device, dense_bytes: int):
    """The latency phase's dense reference: loaded beside the pruned model where it fits,
    else a reason (str) for the record instead of an out-of-memory error."""

    def load():
        if not dense_reference_fits(dense_bytes, device):
            return f"the dense model ({dense_bytes / 2**30:.1f} GiB) does not fit beside the pruned one on {device}"
        return load_model(config["model"], config["dtype"], config["seed"])[0].to(device)

    return load


def execute(
    config: dict[str, Any],
    record: dict[str, Any],
    logger: WandbLogger,
    calib_set: CalibrationSet | None,
    timer: PhaseTimer,
) -> None:
    """The science of one run; fills record['metrics'], ['protocol'], ['widths']."""
    device = resolve_device(config["device"])
    with PeakMemory() as memory:
        with timer.phase("load"):
            model, tokenizer = load_model(config["model"], config["dtype"], config["seed"])
        record["weights"] = provenance(config["model"], model)
        adapter = adapter_for(model)
        dense = {"total": total_params(model), "decoder": surgery.decoder_params(model, adapter)}
        probe = layer_error_probe(model, tokenizer, config, device)
        pruning = prune_model(model, config, device, timer, calib_set)
        pruned = surgery.decoder_params(model, adapter) != dense["decoder"]
        model, placement = place(recover(model, tokenizer, config, device, timer, record, logger), device)
        load_dense = dense_loader(config, device, dense["total"] * torch_dtype(config["dtype"]).itemsize)
        metrics, protocol, tasks, evidence = evaluate(
            model, tokenizer, config, device, timer, load_dense if pruned else None
        )
        protocol["placement"] = placement.detail
        if evidence:
            record["evidence"] = evidence
        if tasks:
            record["zeroshot"] = tasks
            columns = ["task", "n", "acc", "acc_norm", "paper_metric"]
            logger.table("zeroshot", columns, [[row.get(c) for c in columns] for row in tasks])
        if probe is not None:
            errors = ffn_output_mse(probe["dense"], ffn_outputs(model, probe["windows"], device))
            record["analysis"] = {"ffn_output_mse": errors}
            metrics["ffn_mse/last_layer"] = errors[-1]
            protocol["layer_error"] = probe["protocol"]
        if config["results"]["save_model"]:
            with timer.phase("save"):
                save_pruned(model, record["model_path"], tokenizer, {"run_key": record["run_key"]})
    metrics.update(size_metrics(model, dense, pruning))
    metrics["mem/peak_rss_gb"] = memory.peak_rss / 2**30
    _finish_record(record, config, metrics, protocol, pruning, memory, timer, device)
    logger.log(metrics)
    # The evidence (every window and document) stays in the store: W&B summaries are small.
    skipped = ("config", "metrics", "status", "error", "evidence")
    report_fields = {k: v for k, v in record.items() if k not in skipped}
    logger.summary({**metrics, RECORD_KEY: json.dumps(report_fields, default=str)})


def _finish_record(record, config, metrics, protocol, pruning, memory, timer: PhaseTimer, device) -> None:
    if "prune_peak_rss_gb" in pruning:  # the pruning phase alone (LLM-Pruner's backward pass)
        metrics["mem/prune_peak_rss_gb"] = pruning.pop("prune_peak_rss_gb")
    if memory.peak_cuda:
        metrics["mem/peak_cuda_gb"] = memory.peak_cuda / 2**30
    metrics.update({f"time/{phase}_s": seconds for phase, seconds in timer.seconds.items()})
    # CPU threads: LAPACK's Cholesky and triangular solves round differently with another
    # thread count, so OBS-compensated perplexities move ~2e-6 relative (bench/parallel_runs.py).
    protocol.update(
        device=str(device),
        dtype=config["dtype"],
        seed=config["seed"],
        data_source=config["data"]["source"],
        threads=torch.get_num_threads(),
    )
    if pruning.get("calibration"):
        protocol["calibration"] = pruning["calibration"]
    record["metrics"] = metrics
    record["protocol"] = protocol
    record["pruning"] = {k: v for k, v in pruning.items() if k not in ("layers", "calibration")}
    record["widths"] = pruning["layers"]


class Terminated(BaseException):
    """SIGTERM (a cluster's time limit, `kill`): the record says so instead of `running`."""


@contextmanager
def _terminate_as_exception():
    def handler(signum, frame):
        raise Terminated(f"terminated by signal {signal.Signals(signum).name}")

    # Only where nobody else handles SIGTERM (submitit installs its own) and we can install it.
    installable = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if installable else None
    if previous is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(config: dict[str, Any]) -> dict[str, Any]:
    """Run (or skip) one job; returns its record. Raises on failure after recording it;
    a bad input (SlimexpError before the record is written) leaves no record at all."""
    config = resolve_config(config)
    validate_config(config)
    key = run_key(config)
    store = ResultsStore(config["results"]["dir"])
    skip_done = config["runner"]["skip_done"]
    if skip_done and store.is_done(key):
        log.info("run %s is done: skipped (%s)", key, store.path(key))
        return store.read(key)
    if store.warn_unreadable():
        log.warning("run %s: its record cannot be read, so the run is computed again", key)
    preflight(config, key)
    with store.claim(key):
        # A concurrent job with the same key may have finished it while this one waited.
        if skip_done and store.is_done(key):
            log.info("run %s was finished by another job: skipped", key)
            return store.read(key)
        timer = PhaseTimer()
        calib_set = prepare_inputs(config, timer)
        return _execute_and_record(config, key, store, calib_set, timer)


def new_record(config: dict[str, Any], key: str) -> dict[str, Any]:
    record = {
        "run_key": key,
        "status": "running",
        "experiment": config.get("experiment_name", "default"),
        "method": config["method"]["name"],
        "model": config["model"]["name"],
        "ratio": config["prune"]["ratio"] if "prune" in config else 0.0,
        "finetune": (config.get("finetune") or {}).get("name", "none"),
        "config": config,
        "metrics": {},
        "started_at": datetime.now(timezone.utc).isoformat(),
        "finished_at": None,
        "error": None,
        # What the resource planner expected, per phase, beside what the metrics measure.
        "plan": plan_summary(config),
        **environment_info(),
    }
    if config["results"]["save_model"]:
        record["model_path"] = str(model_path(config, key))
    return record


def _execute_and_record(
    config: dict[str, Any], key: str, store: ResultsStore, calib_set: CalibrationSet | None, timer: PhaseTimer
) -> dict[str, Any]:
    record = new_record(config, key)
    logger = WandbLogger(config["logger"])
    store.write(record)
    log.info("run %s: record %s", key, store.path(key))
    start = time.perf_counter()
    try:
        with _terminate_as_exception(), logger:
            record["wandb_id"] = logger.start(
                key, record["experiment"], record["method"], config.get("tags", []), config
            )
            record["wandb"] = {"mode": logger.effective_mode, "trouble": logger.trouble}
            execute(config, record, logger, calib_set, timer)
        record["status"] = "done"
    except BaseException as err:
        record["status"] = "failed"
        record["error"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        if "wandb" in record:  # W&B trouble mid-run is recorded; it never fails the run
            record["wandb"]["trouble"] = logger.trouble
        record["metrics"]["time/total_s"] = time.perf_counter() - start
        record["finished_at"] = datetime.now(timezone.utc).isoformat()
        store.write(record)
    return record
