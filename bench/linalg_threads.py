"""One thread against the default for the CPU factorisations the methods run (SVD for
LoRAP, eigh, Cholesky for SlimGPT), side by side in one process: prints each time and the
ratio. `python -m bench.linalg_threads`."""

from __future__ import annotations

import time

import torch


def _timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    torch.manual_seed(0)
    default = torch.get_num_threads()
    for n in (576, 1536):
        w = torch.randn(n, n, dtype=torch.float64)
        h = w @ w.T + n * torch.eye(n, dtype=torch.float64)
        cases = {
            "svd": lambda w=w: torch.linalg.svd(w, full_matrices=False),
            "eigh": lambda h=h: torch.linalg.eigh(h),
            "cholesky": lambda h=h: torch.linalg.cholesky(h),
        }
        for name, fn in cases.items():
            times = {}
            for threads in (default, 1):
                torch.set_num_threads(threads)
                times[threads] = _timed(fn)
            torch.set_num_threads(default)
            print(
                f"{name:9s} {n:5d}²  {default} threads {times[default]:8.3f} s   1 thread {times[1]:8.3f} s   "
                f"ratio {times[default] / times[1]:7.1f}×"
            )


if __name__ == "__main__":
    main()
