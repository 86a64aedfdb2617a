"""Optimal Brain Surgeon for structured pruning of a linear layer's input columns (SlimGPT).

Framework-free: tensors in, tensors out. A layer W (d_out × d_in) sees inputs x; removing a
set S of input columns and re-fitting the rest to minimise ‖WX − ŴX‖² costs
Σ_rows wₛᵀ([H⁻¹]ₛₛ)⁻¹wₛ in units of H = (2/N_seq)·Σ_tokens x xᵀ. DESIGN §5 gives the
authors' algorithm step by step; this module follows it, odd parts included:

- heads: Batched Greedy Pruning, one unit (a block of columns) per iteration, scored
  with the grouped Cholesky of the unit blocks of H⁻¹ (`head_score="authors"`) or with
  the exact group error (`"exact"`);
- FFN channels: Dynamic Group Size, the `cnt` lowest single-column errors at once.

Both remove a block with the same local + global compensation, which leaves W equal to
the (H-weighted) least-squares re-fit of the kept columns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from slimexp.errors import SlimexpError

log = logging.getLogger(__name__)

# Relative damping tried, in order, when a Cholesky fails (× mean of the diagonal).
RETRY_DAMPING = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


class HessianAccumulator:
    """H = (2/N_seq)·Σ_tokens x xᵀ as a running mean over calibration *sequences*, as the
    authors accumulate it: for a batch of b sequences H ← H·n/(n+b), n ← n+b,
    H += (2/n)·Σ x xᵀ."""

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype
        self.hessian: torch.Tensor | None = None
        self.n_sequences = 0

    def add_batch(self, x: torch.Tensor) -> None:
        if x.dim() == 2:
            x = x.unsqueeze(0)
        batch = x.shape[0]
        tokens = x.reshape(-1, x.shape[-1]).to(self.dtype)
        if self.hessian is None:
            self.hessian = torch.zeros(tokens.shape[1], tokens.shape[1], dtype=self.dtype, device=tokens.device)
        self.hessian *= self.n_sequences / (self.n_sequences + batch)
        self.n_sequences += batch
        self.hessian.addmm_(tokens.T, tokens, alpha=2.0 / self.n_sequences)


@contextmanager
def full_precision() -> Iterator[None]:
    """TF32 off for the duration (the authors disable it): a TF32 matmul loses ~3 decimal
    digits, enough to mis-rank near-equal units."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        saved = matmul.fp32_precision
        matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = saved
    else:  # older torch
        saved = matmul.allow_tf32
        matmul.allow_tf32 = False
        try:
            yield
        finally:
            matmul.allow_tf32 = saved


def prepare(weight: torch.Tensor, hessian: torch.Tensor, percdamp: float) -> int:
    """Once, before the loop, in place: dead inputs (H_jj = 0) get H_jj = 1 and W[:, j] = 0,
    then percdamp·mean(diag H) (mean taken after the fix) is added to the diagonal.
    Dead columns are not marked pruned; they stay candidates with score 0. Returns the
    number of dead columns."""
    if not torch.isfinite(hessian).all():
        raise SlimexpError(
            "the Hessian has NaN/inf entries: the layer's calibration activations are not finite "
            "(fp16 overflow? run the model with dtype=float32)"
        )
    diagonal = hessian.diagonal()
    dead = diagonal == 0
    diagonal[dead] = 1
    weight[:, dead] = 0
    if percdamp > 0:
        diagonal += percdamp * diagonal.mean()
    return int(dead.sum())


def cholesky_with_retry(matrix: torch.Tensor, what: str, upper: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Cholesky factor of a (batch of) symmetric matrices. A matrix that is not positive
    definite in floating point is retried with growing damping (× its mean diagonal),
    with a warning. Returns (factor, damping added to each matrix's diagonal)."""
    factor, info = torch.linalg.cholesky_ex(matrix, upper=upper)
    added = torch.zeros(matrix.shape[:-2], dtype=matrix.dtype, device=matrix.device)
    if not bool((info > 0).any()):
        return factor, added
    scale = matrix.diagonal(dim1=-2, dim2=-1).mean(-1).abs().clamp_min(torch.finfo(matrix.dtype).tiny)
    for relative in RETRY_DAMPING:
        failed = info > 0
        added = torch.where(failed, relative * scale, added)
        damped = matrix + torch.diag_embed(added.unsqueeze(-1).expand(matrix.shape[:-1]))
        retried, info_retried = torch.linalg.cholesky_ex(damped, upper=upper)
        factor = torch.where(failed[..., None, None], retried, factor)
        info = torch.where(failed, info_retried, info)
        if not bool((info > 0).any()):
            log.warning(
                "Cholesky of %s failed; retried with damping up to %.1e × mean diagonal (%d matrix/matrices)",
                what,
                relative,
                int((added > 0).sum()),
            )
            return factor, added
    raise SlimexpError(
        f"Cholesky of {what} failed even with damping {RETRY_DAMPING[-1]} × mean diagonal; "
        "the calibration set may be too small or degenerate (raise percdamp)"
    )


def inverse_hessian(hessian: torch.Tensor) -> torch.Tensor:
    """H⁻¹ = cholesky_inverse(cholesky(H)). A retry's damping is kept in H (in place), so
    the next iterations see the same matrix and do not fail and warn again."""
    factor, added = cholesky_with_retry(hessian, "the Hessian")
    if added.item() > 0:
        hessian.diagonal().add_(added)
    return torch.cholesky_inverse(factor)


def unit_blocks(hinv: torch.Tensor, unit_columns: torch.Tensor) -> torch.Tensor:
    """The diagonal blocks [H⁻¹]ₕₕ of every unit: (n_units, unit_size, unit_size)."""
    return hinv[unit_columns[:, :, None], unit_columns[:, None, :]]


def obs_denominators(hinv: torch.Tensor, unit_columns: torch.Tensor, grouped: bool) -> torch.Tensor:
    """d_j per column of each unit, (n_units, unit_size). Grouped: (L_h)ⱼⱼ² of the batched
    Cholesky of the unit blocks, the denominators met when the unit's columns are removed
    one by one; else diag(H⁻¹), the one-column denominators."""
    if not grouped:
        return hinv.diagonal()[unit_columns]
    factors, _ = cholesky_with_retry(unit_blocks(hinv, unit_columns), "the unit blocks of H⁻¹")
    return factors.diagonal(dim1=-2, dim2=-1) ** 2


def unit_errors(
    weight: torch.Tensor, hinv: torch.Tensor, unit_columns: torch.Tensor, score: str, grouped: bool = True
) -> torch.Tensor:
    """Estimated error of removing each unit, (n_units,), in units of H.

    `authors`: E_h = Σ_{j∈h} Σ_rows W[:, j]² / d_j (ignores the unit's own within-unit
    updates, so it depends on the column order inside the unit). `exact`: the group error
    Σ_rows ‖L_h⁻¹ wₛ‖² = Σ_rows wₛᵀ([H⁻¹]ₛₛ)⁻¹wₛ (always needs the block factor)."""
    if score == "authors":
        denominators = obs_denominators(hinv, unit_columns, grouped)
        return (weight[:, unit_columns] ** 2 / denominators).sum(dim=(0, 2))
    if score == "exact":
        factors, _ = cholesky_with_retry(unit_blocks(hinv, unit_columns), "the unit blocks of H⁻¹")
        unit_weights = weight[:, unit_columns].permute(1, 2, 0)  # (n_units, unit_size, rows)
        whitened = torch.linalg.solve_triangular(factors, unit_weights, upper=False)
        return (whitened**2).sum(dim=(1, 2))
    raise ValueError(f"head_score must be 'authors' or 'exact', got {score!r}")


def column_errors(weight: torch.Tensor, hinv: torch.Tensor) -> torch.Tensor:
    """One-column OBS errors e_j = Σ_rows W[:, j]² / [H⁻¹]_jj."""
    return (weight**2 / hinv.diagonal()).sum(0)


def remove_block(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    hinv: torch.Tensor,
    block: torch.Tensor,
    remaining: torch.Tensor,
    compensate: bool,
) -> float:
    """Remove the columns `block` (in this order) from W, in place, and return the OBS error
    (in units of H; the exact group error when compensating).

    With the block's columns permuted to the front, U = upper Cholesky of the permuted H⁻¹;
    only its first |block| rows are used: U_bb factors [H⁻¹]_bb and U_br = U_bb⁻ᵀ[H⁻¹]_br,
    so the full permuted factorisation the authors compute is not needed. Column by column,
    err_i = W[:, i]/U_ii and W[:, i:block] −= err_i·U[i, i:block] (within-block
    compensation): stacked, the errors solve Err·U_bb = W_b (one triangular solve). Then
    W[:, rest] −= Err·U_br over the not-yet-removed columns (global compensation). Finally
    the block's columns are zeroed and its rows/columns of H become identity.
    `remaining` is the boolean mask of columns not removed before this block."""
    rest_mask = remaining.clone()
    rest_mask[block] = False
    rest = rest_mask.nonzero().flatten()
    upper_block, _ = cholesky_with_retry(hinv[block][:, block], "a block of H⁻¹", upper=True)
    errors = torch.linalg.solve_triangular(upper_block, weight[:, block], upper=True, left=False)
    if compensate and len(rest):
        upper_rest = torch.linalg.solve_triangular(upper_block.T, hinv[block][:, rest], upper=False)
        weight[:, rest] -= errors @ upper_rest
    weight[:, block] = 0
    hessian[block, :] = 0
    hessian[:, block] = 0
    hessian[block, block] = 1
    return float((errors**2).sum())


@dataclass
class PruneResult:
    removed: list[int]  # units or columns, in the order they were removed
    errors: list[float] = field(default_factory=list)  # OBS error of each step, units of H
    group_sizes: list[int] = field(default_factory=list)
    # Each step's scores (unit or column errors; +inf where not a candidate), on the CPU.
    scores: list[torch.Tensor] = field(default_factory=list)


def prune_units(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    unit_columns: torch.Tensor,
    count: int,
    score: str = "authors",
    grouped: bool = True,
    compensate: bool = True,
    candidates: Callable[[set[int]], list[int]] | None = None,
) -> PruneResult:
    """Batched Greedy Pruning: remove `count` units, one per iteration, each time the one
    with the smallest estimated error among `candidates(removed)` (default: all units not
    yet removed), recomputing H⁻¹ from the updated H each time. `unit_columns` is
    (n_units, unit_size): the columns of W owned by each unit. W and H change in place."""
    n_units = unit_columns.shape[0]
    removed: list[int] = []
    result = PruneResult(removed)
    remaining = torch.ones(weight.shape[1], dtype=torch.bool, device=weight.device)
    for _ in range(count):
        allowed = candidates(set(removed)) if candidates else [u for u in range(n_units) if u not in removed]
        if not allowed:
            raise ValueError(f"no unit may be removed after {removed}")
        hinv = inverse_hessian(hessian)
        errors = unit_errors(weight, hinv, unit_columns, score, grouped)
        allowed_tensor = torch.tensor(allowed, dtype=torch.long, device=errors.device)
        best = int(allowed_tensor[torch.argmin(errors[allowed_tensor])])
        candidates_only = torch.full_like(errors, torch.inf)
        candidates_only[allowed_tensor] = errors[allowed_tensor]
        result.scores.append(candidates_only.cpu())
        block = unit_columns[best]
        result.errors.append(remove_block(weight, hessian, hinv, block, remaining, compensate))
        remaining[block] = False
        removed.append(best)
    return result


def group_sizes(target: int, max_group: int, min_group: int, dynamic: bool = True, fixed_group: int = 128) -> list[int]:
    """How many FFN columns each iteration removes.

    Dynamic Group Size, as the authors' code: offset = max_group/2 (512 for 1024);
    blocksize₀ = (T − offset)//2, cnt = min(T − removed, max(blocksize, min_group),
    max_group), blocksize ← (blocksize − offset)//2 after each step (Python floor
    division, so it turns negative and min_group takes over). Else a fixed group size."""
    sizes, removed = [], 0
    offset = max_group // 2
    blocksize = (target - offset) // 2
    while removed < target:
        cnt = (
            min(target - removed, max(blocksize, min_group), max_group)
            if dynamic
            else min(target - removed, fixed_group)
        )
        sizes.append(cnt)
        removed += cnt
        blocksize = (blocksize - offset) // 2
    return sizes


def prune_columns(
    weight: torch.Tensor, hessian: torch.Tensor, sizes: list[int], compensate: bool = True
) -> PruneResult:
    """FFN channels: each iteration removes the sizes[k] columns with the smallest
    one-column errors as one block (ordered by error, ascending), re-inverting H between
    iterations. W and H change in place."""
    removed: list[int] = []
    result = PruneResult(removed, group_sizes=list(sizes))
    remaining = torch.ones(weight.shape[1], dtype=torch.bool, device=weight.device)
    for cnt in sizes:
        hinv = inverse_hessian(hessian)
        errors = column_errors(weight, hinv)
        errors[~remaining] = torch.inf
        block = torch.argsort(errors, stable=True)[:cnt]
        result.scores.append(errors.cpu())
        result.errors.append(remove_block(weight, hessian, hinv, block, remaining, compensate))
        remaining[block] = False
        removed += block.tolist()
    return result
