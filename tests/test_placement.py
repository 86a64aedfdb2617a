"""Whole-model phases: the model goes onto the device whole when it fits, else through a
device map; the latency phase's dense reference is skipped, with its reason, when it
cannot fit beside the pruned model."""

import torch

from slimexp.evaluation.cost import model_bytes
from slimexp.models.placement import HEADROOM, dense_reference_fits, fits, place
from slimexp.pipeline import dense_loader


def test_fits_keeps_a_headroom_for_activations():
    assert fits(80, 100) and not fits(81, 100)
    assert fits(10**15, None)  # the host is not limited here
    assert HEADROOM == 0.2


def test_on_the_host_the_model_is_moved_whole(tiny):
    tiny_model = tiny()
    model, placement = place(tiny_model, torch.device("cpu"))
    assert model is tiny_model and placement.kind == "whole" and "cpu" in placement.detail


def test_a_model_larger_than_the_free_memory_would_be_dispatched(tiny, monkeypatch):
    tiny_model = tiny()
    from slimexp.models import placement as module

    calls = {}

    def fake_dispatch(model, device, budget, need):
        calls.update(budget=budget, need=need)
        return model, module.Placement("device_map", "spread")

    monkeypatch.setattr(module, "_dispatch", fake_dispatch)
    need = model_bytes(tiny_model)
    _, chosen = place(tiny_model, torch.device("cpu"), free_bytes=need)  # 80% of it is usable
    assert chosen.kind == "device_map" and calls == {"budget": int(need * (1 - HEADROOM)), "need": need}


def test_the_dense_reference_is_skipped_with_a_reason_where_it_cannot_fit(monkeypatch):
    from slimexp import pipeline

    assert dense_reference_fits(8 * 2**30, torch.device("cuda"), free_bytes=16 * 2**30)
    assert not dense_reference_fits(14 * 2**30, torch.device("cuda"), free_bytes=16 * 2**30)
    monkeypatch.setattr(pipeline, "dense_reference_fits", lambda need, device: False)
    reason = dense_loader({}, "cuda:0", 14 * 2**30)()
    assert reason == "the dense model (14.0 GiB) does not fit beside the pruned one on cuda:0"
