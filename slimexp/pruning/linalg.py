"""Dense factorisations on the CPU, run with one thread.

On the 2-core machines LAPACK's SVD and eigh with two threads are pathologically slow
whenever another process holds a core (measured by `bench/linalg_threads.py`: a 576²
float64 SVD 10.9 s with two threads against 0.16 s with one; eigh 7.7 s against 0.07 s).
One thread is never much slower on matrices this size, so CPU factorisations run under
`one_thread` (SlimLLM's eigh, LoRAP's SVD); CUDA tensors are left alone. Cholesky suffers
little (1–3×) and is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread(tensor: torch.Tensor) -> Iterator[None]:
    if tensor.device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def svd(matrix: torch.Tensor):
    """Thin SVD (U, σ, Vᵀ), single-threaded on the CPU."""
    with one_thread(matrix):
        return torch.linalg.svd(matrix, full_matrices=False)


def eigh(matrix: torch.Tensor):
    """Eigenvalues (ascending) and eigenvectors of a symmetric matrix, single-threaded on the CPU."""
    with one_thread(matrix):
        return torch.linalg.eigh(matrix)
