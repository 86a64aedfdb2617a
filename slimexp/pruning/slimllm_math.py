"""SlimLLM's math (Guo et al., ICML 2025, §4; DESIGN §5), free of models and the engine.

Tensors in, tensors out; everything that decides which units go or what the regression
fits is computed in float64.

Heads. A unit u (a query head, or a KV group: the sum of its query heads) contributes
O_u = X_u·W_Oᵤᵀ to the o_proj output Y = Σ_u O_u (X = o_proj input, tokens × columns).
Every quantity the head criterion needs is a per-output-dimension Pearson correlation
between sums of contributions, so we keep the centred cross products
G[u, v, k] = Σ_t Õ_u[t, k]·Õ_v[t, k] once, and then for any 0/1 mask m over units
ρ_k(Σ_u m_u O_u, Y) = (mᵀG[k]1) / √((mᵀG[k]m)·(1ᵀG[k]1)), exactly, at no further cost
per candidate set. A correlation with a zero-variance side (an empty set, a dead output
dimension) counts as 0 (np.corrcoef would give nan).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from slimexp.pruning import linalg

F64 = torch.float64


# --------------------------------------------------------------------------- heads


@torch.no_grad()
def contribution_gram(x: torch.Tensor, w_o: torch.Tensor, unit_columns: Sequence[Sequence[int]]) -> torch.Tensor:
    """G[u, v, k] = Σ_t Õ_u[t, k]·Õ_v[t, k] (U, U, D), Õ the token-centred contributions.

    x: (tokens, columns) o_proj input; w_o: (D, columns); unit_columns[u]: u's columns.
    Contributions are linear in X, so with Σ = X̃ᵀX̃ (X̃ centred over tokens)
    G[u, v, k] = Σ_{i∈u, j∈v} W[k, i]·Σ[i, j]·W[k, j]: two dense products instead of
    materialising U × tokens × D contributions (which is both slower and larger).
    """
    x = x.reshape(-1, x.shape[-1]).to(F64)
    x = x - x.mean(0, keepdim=True)
    w = w_o.to(device=x.device, dtype=F64)
    covariance = x.T @ x
    membership = torch.zeros(x.shape[1], len(unit_columns), dtype=F64, device=x.device)
    for u, cols in enumerate(unit_columns):
        membership[list(cols), u] = 1.0
    gram = torch.empty(len(unit_columns), len(unit_columns), w.shape[0], dtype=F64, device=x.device)
    for v, cols in enumerate(unit_columns):
        index = torch.as_tensor(list(cols), dtype=torch.long, device=x.device)
        # [k, i] = W[k, i]·Σ_{j∈v} Σ[i, j]·W[k, j]; summing i over u's columns gives G[u, v, k].
        through_v = w * (w[:, index] @ covariance[index, :])
        gram[:, v, :] = (through_v @ membership).T
    return gram


def pearson_sums(gram: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Σ_k |ρ_k(Σ_u masks[i, u]·O_u, Y)| for each row i of `masks` (M, U) → (M,)."""
    masks = masks.to(device=gram.device, dtype=F64)
    with_all = gram.sum(1)  # (U, D): cov(O_u, Y)·N
    var_y = with_all.sum(0)  # (D,)
    cov = masks @ with_all  # (M, D)
    n_units, dim = gram.shape[1], gram.shape[2]
    var = ((masks @ gram.reshape(n_units, n_units * dim)).view(-1, n_units, dim) * masks[:, :, None]).sum(1)
    denominator = torch.sqrt(var.clamp_min(0) * var_y.clamp_min(0))
    positive = denominator > 0
    rho = torch.where(
        positive, cov / torch.where(positive, denominator, torch.ones_like(denominator)), torch.zeros_like(cov)
    )
    return rho.abs().sum(1)


def _mask(n_units: int, members: Sequence[int]) -> torch.Tensor:
    mask = torch.zeros(n_units, dtype=F64)
    mask[list(members)] = 1.0
    return mask


def head_scores(gram: torch.Tensor) -> torch.Tensor:
    """S_u = Σ_k |ρ_k(Y − O_u, Y)|: high when the output barely notices u's removal."""
    n_units = gram.shape[0]
    return pearson_sums(gram, 1.0 - torch.eye(n_units, dtype=F64))


def objective(gram: torch.Tensor, kept: Sequence[int]) -> float:
    """C(K) = Σ_k |ρ_k(Σ_{u∈K} O_u, Y)|."""
    return float(pearson_sums(gram, _mask(gram.shape[0], kept)[None])[0])


def greedy_swap(
    gram: torch.Tensor, pruned: Sequence[int], scores: torch.Tensor, groups: Sequence[int] | None = None
) -> tuple[list[int], list[tuple[int, int]]]:
    """SlimLLM Algorithm 1, one pass, as the authors run it.

    For each initially pruned unit p in descending score order: with the kept set K
    fixed, evaluate C(K − j + p) for every candidate j ∈ K (ascending index) and take the
    best; apply that single swap only if it is strictly greater than C(K). Units swapped
    out are never reconsidered (only the initial pruned list is walked). With `groups`
    (q_head on GQA: the KV group of each unit), j must share p's group, so every KV group
    keeps the number of heads removed from it. Returns (pruned units sorted, swaps
    applied as (p put back, j removed)).
    """
    n_units = gram.shape[0]
    groups = list(groups) if groups is not None else [0] * n_units
    pruned_now = set(int(p) for p in pruned)
    kept = [u for u in range(n_units) if u not in pruned_now]
    current = objective(gram, kept)
    swaps: list[tuple[int, int]] = []
    for p in sorted(pruned_now, key=lambda u: (-float(scores[u]), u)):
        candidates = [j for j in kept if groups[j] == groups[p]]
        if not candidates:
            continue
        masks = torch.stack([_mask(n_units, [u for u in kept if u != j] + [p]) for j in candidates])
        values = pearson_sums(gram, masks)
        best = int(torch.argmax(values))  # first maximum: the earliest j wins a tie
        if float(values[best]) > current:
            j = candidates[best]
            kept = sorted([u for u in kept if u != j] + [p])
            pruned_now = (pruned_now - {p}) | {j}
            current = float(values[best])
            swaps.append((int(p), int(j)))
    return sorted(pruned_now), swaps


# --------------------------------------------------------------------------- FFN channels


@torch.no_grad()
def column_norms(x: torch.Tensor) -> torch.Tensor:
    """L2 norm over all tokens of each feature (last dim) of x, in float64."""
    return x.reshape(-1, x.shape[-1]).to(F64).pow(2).sum(0).sqrt()


@torch.no_grad()
def feature_space_weights(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA of the FFN output Y (tokens, D): eigenvectors V (D, D) of the centred
    covariance (Y − μ)ᵀ(Y − μ) (not divided by N) and weights w = sigmoid(|λ| / mean|λ|)."""
    y = y.reshape(-1, y.shape[-1]).to(F64)
    centred = y - y.mean(0, keepdim=True)
    eigenvalues, vectors = linalg.eigh(centred.T @ centred)
    magnitude = eigenvalues.abs()
    return vectors, torch.sigmoid(magnitude / magnitude.mean())


@torch.no_grad()
def channel_importance(
    a: torch.Tensor,
    x_norm: torch.Tensor,
    w_gate: torch.Tensor,
    w_up: torch.Tensor,
    w_down: torch.Tensor,
    y: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """SlimLLM §4.2: I = I_g + I_u + I_d per channel c (lowest = least important).

    a: (tokens, d_ff) down_proj input act(gate(X))⊙up(X); x_norm: (hidden,) ‖X_j‖₂ over
    tokens of the FFN input; weights as stored by nn.Linear (out, in); y: A·W_downᵀ when
    the caller already has it (float64), else computed.
    I_d = ‖ |W_down[:, c]ᵀV| ⊙ w ‖₂ · ‖A_c‖₂ with V, w from the PCA of Y = A·W_downᵀ;
    I_g = ‖W_gate[c, :] ⊙ ‖X‖ ‖₂, I_u likewise.
    """
    a = a.reshape(-1, a.shape[-1]).to(F64)
    w_down = w_down.to(device=a.device, dtype=F64)
    vectors, weights = feature_space_weights(a @ w_down.T if y is None else y)
    projected = w_down.T @ vectors  # (d_ff, D): W' = W_downᵀ Q
    i_d = (projected.abs() * weights).norm(dim=1) * column_norms(a)
    x_norm = x_norm.to(device=a.device, dtype=F64)
    i_g = (w_gate.to(device=a.device, dtype=F64) * x_norm).norm(dim=1)
    i_u = (w_up.to(device=a.device, dtype=F64) * x_norm).norm(dim=1)
    return {"score": i_g + i_u + i_d, "i_d": i_d, "i_g": i_g, "i_u": i_u}


def channels_to_prune(scores: torch.Tensor, count: int, protect: int) -> list[int]:
    """Sort ascending, skip the `protect` lowest (the authors' code keeps them) and prune
    the next `count`. When protect + count exceeds the width, the window slides down so
    the plan's count is still met."""
    order = torch.argsort(scores.cpu(), stable=True)
    start = max(0, min(int(protect), len(order) - int(count)))
    return sorted(order[start : start + int(count)].tolist())


# --------------------------------------------------------------------------- regression


@torch.no_grad()
def linear_fit(y_hat: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output dimension k, least squares y_k ≈ a_k·ŷ_k + b_k over tokens: what
    `numpy.polyfit(ŷ_k, y_k, 1)` returns, in float64. y_hat, y: (tokens, D) → a, b (D,).

    A dimension whose ŷ_k is constant (e.g. every unit removed) has no slope to fit: a_k = 1
    keeps the weights, b_k = mean(y_k − ŷ_k) (polyfit would return a minimum-norm mix)."""
    y_hat = y_hat.reshape(-1, y_hat.shape[-1]).to(F64)
    y = y.reshape(-1, y.shape[-1]).to(device=y_hat.device, dtype=F64)
    mean_hat, mean_y = y_hat.mean(0), y.mean(0)
    centred_hat = y_hat - mean_hat
    var = centred_hat.pow(2).sum(0)
    cov = (centred_hat * (y - mean_y)).sum(0)
    # Constant within rounding (relative to the scale of ŷ) counts as constant.
    tiny = var <= (torch.finfo(F64).eps * y_hat.shape[0]) * (y_hat.pow(2).sum(0) + 1e-300)
    slope = torch.where(tiny, torch.ones_like(var), cov / torch.where(tiny, torch.ones_like(var), var))
    return slope, mean_y - slope * mean_hat


@torch.no_grad()
def partial_output(x: torch.Tensor, weight: torch.Tensor, columns: Sequence[int] | None = None) -> torch.Tensor:
    """x[:, columns] @ weight[:, columns]ᵀ in float64 (all columns when None): the output of
    a projection (no bias) restricted to some of its inputs."""
    x = x.reshape(-1, x.shape[-1]).to(F64)
    weight = weight.to(device=x.device, dtype=F64)
    if columns is None:
        return x @ weight.T
    index = torch.as_tensor(list(columns), dtype=torch.long, device=x.device)
    return x[:, index] @ weight[:, index].T
