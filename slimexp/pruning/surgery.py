"""Physical removal of heads and FFN channels, output biases, and per-layer widths.

Everything here changes tensor shapes, so a pruned model is really smaller and faster.
A layer may lose all its heads or channels (FLAP's global allocation allows it): the
module then outputs only its bias.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from slimexp.models.adapters import ArchitectureAdapter
from slimexp.pruning import lowrank
from slimexp.pruning.units import LayerGeometry


def _new_linear(in_features: int, out_features: int, bias: bool, like: torch.Tensor) -> nn.Linear:
    with warnings.catch_warnings():
        # An emptied module (0 heads / 0 channels) is legal; its init warning is noise.
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.utils.skip_init(nn.Linear, in_features, out_features, bias=bias, device=like.device, dtype=like.dtype)


def _keep(n: int, removed: Sequence[int]) -> torch.Tensor:
    removed_set = set(int(i) for i in removed)
    if any(i < 0 or i >= n for i in removed_set):
        raise IndexError(f"index out of range 0..{n - 1}: {sorted(removed_set)}")
    return torch.tensor([i for i in range(n) if i not in removed_set], dtype=torch.long)


def slice_rows(linear: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    keep = keep.to(linear.weight.device)
    new = _new_linear(linear.in_features, len(keep), linear.bias is not None, linear.weight)
    with torch.no_grad():
        new.weight.copy_(linear.weight.index_select(0, keep))
        if linear.bias is not None:
            new.bias.copy_(linear.bias.index_select(0, keep))
    return new


def slice_columns(linear: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    keep = keep.to(linear.weight.device)
    new = _new_linear(len(keep), linear.out_features, linear.bias is not None, linear.weight)
    with torch.no_grad():
        new.weight.copy_(linear.weight.index_select(1, keep))
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new


class HeadlessAttention(nn.Module):
    """Stands in for an attention module that lost every head: outputs the o_proj bias.

    It still writes empty keys/values into the cache so that `generate()` keeps counting
    positions when this is layer 0.
    """

    def __init__(self, o_proj: nn.Linear, layer_idx: int, head_dim: int):
        super().__init__()
        self.o_proj = o_proj
        self.layer_idx = layer_idx
        self.head_dim = head_dim

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, past_key_values=None, **kwargs):
        batch, seq = hidden_states.shape[:2]
        if past_key_values is not None:
            empty = hidden_states.new_zeros(batch, 0, seq, self.head_dim)
            past_key_values.update(empty, empty, self.layer_idx)
        return self.o_proj(hidden_states.new_zeros(batch, seq, 0)), None


def geometry(layer: nn.Module, adapter: ArchitectureAdapter) -> LayerGeometry:
    attn = adapter.attn(layer)
    o = adapter.linear(layer, "o")
    down = adapter.linear(layer, "down")
    head_dim = attn.head_dim
    if isinstance(attn, HeadlessAttention):
        n_heads = n_kv = 0
        has = dict(q_bias=False, k_bias=False, v_bias=False)
    else:
        q, k, v = (adapter.linear(layer, r) for r in "qkv")
        n_heads, n_kv = q.out_features // head_dim, k.out_features // head_dim
        has = dict(q_bias=q.bias is not None, k_bias=k.bias is not None, v_bias=v.bias is not None)
    gate, up = adapter.linear(layer, "gate"), adapter.linear(layer, "up")
    return LayerGeometry(
        hidden=o.out_features,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        d_ff=down.in_features,
        o_bias=o.bias is not None,
        gate_bias=gate.bias is not None,
        up_bias=up.bias is not None,
        down_bias=down.bias is not None,
        **has,
    )


def remove_heads(
    layer: nn.Module, adapter: ArchitectureAdapter, q_heads: Sequence[int], kv_heads: Sequence[int]
) -> None:
    """Remove query heads (q rows, o columns) and KV heads (k, v rows).

    Every remaining KV head must keep the same number of query heads, since attention
    repeats K/V uniformly; the module's `num_key_value_groups` is updated to match.
    """
    if not q_heads and not kv_heads:
        return
    g = geometry(layer, adapter)
    hd = g.head_dim
    keep_q = _keep(g.n_heads, q_heads)
    keep_kv = _keep(g.n_kv_heads, kv_heads)
    if len(keep_kv) and len(keep_q) % len(keep_kv):
        raise ValueError(f"{len(keep_q)} query heads cannot share {len(keep_kv)} KV heads evenly")
    if len(keep_kv) == 0 and len(keep_q):
        raise ValueError("cannot keep query heads without any KV head")
    if len(keep_kv):
        per_group = [sum(1 for h in keep_q.tolist() if h // g.group_size == kv) for kv in keep_kv.tolist()]
        if len(set(per_group)) != 1:
            raise ValueError(f"kept query heads per KV group differ: {per_group}")

    def rows(heads):
        return torch.tensor([h * hd + j for h in heads.tolist() for j in range(hd)], dtype=torch.long)

    attn = adapter.attn(layer)
    o_new = slice_columns(adapter.linear(layer, "o"), rows(keep_q))
    if len(keep_q) == 0:
        setattr(layer, adapter.attention, HeadlessAttention(o_new, attn.layer_idx, hd))
        return
    adapter.set_linear(layer, "q", slice_rows(adapter.linear(layer, "q"), rows(keep_q)))
    adapter.set_linear(layer, "k", slice_rows(adapter.linear(layer, "k"), rows(keep_kv)))
    adapter.set_linear(layer, "v", slice_rows(adapter.linear(layer, "v"), rows(keep_kv)))
    adapter.set_linear(layer, "o", o_new)
    attn.num_key_value_groups = len(keep_q) // len(keep_kv)


def remove_channels(layer: nn.Module, adapter: ArchitectureAdapter, channels: Sequence[int]) -> None:
    if not len(channels):
        return
    keep = _keep(adapter.linear(layer, "down").in_features, channels)
    adapter.set_linear(layer, "gate", slice_rows(adapter.linear(layer, "gate"), keep))
    adapter.set_linear(layer, "up", slice_rows(adapter.linear(layer, "up"), keep))
    adapter.set_linear(layer, "down", slice_columns(adapter.linear(layer, "down"), keep))


def add_output_bias(layer: nn.Module, adapter: ArchitectureAdapter, role: str, bias: torch.Tensor) -> None:
    """Add `bias` to the output of o_proj (role 'o') or down_proj ('down'), creating the
    bias parameter when the projection has none (a low-rank projection's is its second factor's)."""
    linear = lowrank.output_linear(adapter.linear(layer, role))
    bias = bias.to(device=linear.weight.device, dtype=linear.weight.dtype)
    if linear.bias is None:
        linear.bias = nn.Parameter(torch.zeros(linear.out_features, device=bias.device, dtype=bias.dtype))
    with torch.no_grad():
        linear.bias.add_(bias)


LOW_RANK_ROLES = ("q", "k", "v", "o")


def low_rank_ranks(layer: nn.Module, adapter: ArchitectureAdapter) -> dict[str, int]:
    """{role: rank} of the projections that are factored (LoRAP's attention)."""
    if isinstance(adapter.attn(layer), HeadlessAttention):
        return {}
    modules = {role: adapter.linear(layer, role) for role in LOW_RANK_ROLES}
    return {role: m.rank for role, m in modules.items() if isinstance(m, lowrank.LowRankLinear)}


def widths(layer: nn.Module, adapter: ArchitectureAdapter) -> dict:
    g = geometry(layer, adapter)
    recorded = {
        "n_heads": g.n_heads,
        "n_kv_heads": g.n_kv_heads,
        "d_ff": g.d_ff,
        "o_bias": g.o_bias,
        "down_bias": g.down_bias,
    }
    ranks = low_rank_ranks(layer, adapter)
    if ranks:  # only then: records and checkpoints of dense layers stay as they were
        recorded["ranks"] = ranks
    return recorded


def factor_projection(layer: nn.Module, adapter: ArchitectureAdapter, role: str, module: nn.Module) -> None:
    """Put a low-rank module (or a dense Linear) in the place of projection `role`."""
    adapter.set_linear(layer, role, module)


def apply_widths(layer: nn.Module, adapter: ArchitectureAdapter, target: dict) -> None:
    """Reshape a freshly built dense layer to recorded widths (contents are reloaded after)."""
    g = geometry(layer, adapter)
    kv_removed = list(range(target["n_kv_heads"], g.n_kv_heads))
    if target["n_heads"] == 0:
        remove_heads(layer, adapter, list(range(g.n_heads)), list(range(g.n_kv_heads)))
    elif target["n_heads"] != g.n_heads or kv_removed:
        per_group = target["n_heads"] // target["n_kv_heads"]
        q_removed = [
            h for h in range(g.n_heads) if h // g.group_size >= target["n_kv_heads"] or h % g.group_size >= per_group
        ]
        remove_heads(layer, adapter, q_removed, kv_removed)
    remove_channels(layer, adapter, list(range(target["d_ff"], g.d_ff)))
    for role, key in (("o", "o_bias"), ("down", "down_bias")):
        if target[key] and adapter.linear(layer, role).bias is None:
            add_output_bias(layer, adapter, role, torch.zeros(adapter.linear(layer, role).out_features))
    # Ranks last, so each factored module inherits the sliced shape and bias. Older
    # checkpoints record no ranks: every projection stays dense.
    for role, rank in (target.get("ranks") or {}).items():
        factor_projection(layer, adapter, role, lowrank.empty_like(adapter.linear(layer, role), int(rank)))


def decoder_params(model: nn.Module, adapter: ArchitectureAdapter) -> int:
    """Parameters of the decoder layers' linear projections (embeddings, norms, lm_head excluded)."""
    return sum(
        p.numel()
        for layer in adapter.layers(model)
        for m in layer.modules()
        if isinstance(m, nn.Linear)
        for p in m.parameters(recurse=False)
    )
