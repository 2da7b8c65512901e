"""Conjugate gradient: solves SPD systems and returns the product TRPO uses for its step size."""

import torch

from metatrade.meta.optimizers import conjugate_gradient, conjugate_gradient_with_product


def test_conjugate_gradient_solves_and_returns_the_product() -> None:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    a = q @ q.T + 0.5 * torch.eye(6, dtype=torch.float64)  # symmetric positive definite
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    x, ax = conjugate_gradient_with_product(lambda v: a @ v, b, iters=20, residual_tol=0.0)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ax, a @ x, rtol=1e-12, atol=1e-12)
    # after fewer iterations than the dimension the product still matches the iterate
    x3, ax3 = conjugate_gradient_with_product(lambda v: a @ v, b, iters=3)
    torch.testing.assert_close(ax3, a @ x3, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(conjugate_gradient(lambda v: a @ v, b, iters=3), x3)
