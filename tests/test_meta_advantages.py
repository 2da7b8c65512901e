"""GAE, returns, normalisation and the linear baseline against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metatrade.meta.advantages import LinearFeatureBaseline, discounted_returns, gae, normalize


def _hand_gae(r, v, nv, term, done, gamma, lam):
    adv = np.zeros(len(r))
    last = 0.0
    for t in reversed(range(len(r))):
        delta = r[t] + gamma * (0.0 if term[t] else nv[t]) - v[t]
        last = delta + gamma * lam * (0.0 if done[t] else 1.0) * last
        adv[t] = last
    return adv


def test_gae_matches_hand_computation_with_termination_and_truncation_bootstrap() -> None:
    # Two episodes in one row: steps 0-2 end by truncation (bootstrap from V(final obs) = 5),
    # steps 3-5 end by termination (no bootstrap).
    r = np.array([1.0, 2.0, 3.0, -1.0, 0.5, 2.0])
    v = np.array([0.5, 1.0, 1.5, 0.2, 0.4, 0.6])
    nv = np.array([1.0, 1.5, 5.0, 0.4, 0.6, 99.0])  # 99 ignored: terminated
    term = np.array([0, 0, 0, 0, 0, 1], dtype=bool)
    trunc = np.array([0, 0, 1, 0, 0, 0], dtype=bool)
    done = term | trunc
    gamma, lam = 0.9, 0.8
    adv, ret = gae(*(torch.tensor(x) for x in (r, v, nv, term, done)), gamma=gamma, lam=lam)
    expected = _hand_gae(r, v, nv, term, done, gamma, lam)
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(ret.numpy(), expected + v, rtol=1e-12)
    # Explicit value for the truncated step: r + gamma * V(final) - V(s).
    assert abs(adv[2].item() - (3.0 + 0.9 * 5.0 - 1.5)) < 1e-12
    # lam = 1 with a zero baseline and no bootstrap is the discounted return.
    zeros = torch.zeros(6, dtype=torch.float64)
    t_done = torch.tensor(done)
    adv1, _ = gae(torch.tensor(r), zeros, zeros, torch.tensor(term), t_done, 0.9, 1.0)
    torch.testing.assert_close(adv1, discounted_returns(torch.tensor(r), t_done, 0.9))


def test_gae_is_batched_over_leading_axes() -> None:
    g = torch.Generator().manual_seed(0)
    r, v, nv = (torch.randn(3, 4, 7, generator=g, dtype=torch.float64) for _ in range(3))
    term = torch.rand(3, 4, 7, generator=g) < 0.2
    done = term | (torch.rand(3, 4, 7, generator=g) < 0.2)
    adv, _ = gae(r, v, nv, term, done, 0.99, 0.95)
    for i in range(3):
        for j in range(4):
            args = (x[i, j].numpy() for x in (r, v, nv, term, done))
            np.testing.assert_allclose(adv[i, j].numpy(), _hand_gae(*args, 0.99, 0.95))


def test_normalize_is_nan_free_for_a_batch_of_one_and_ignores_padding() -> None:
    one = normalize(torch.tensor([3.0]), torch.tensor([1.0]))
    assert torch.isfinite(one).all() and one.item() == 0.0
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    out = normalize(x, m)
    assert out[0, 3] == 0.0
    assert abs(out[0, :3].mean().item()) < 1e-6
    assert abs(out[0, :3].pow(2).mean().sqrt().item() - 1.0) < 1e-6
    # per-task normalisation over the last two axes
    per_task = normalize(
        torch.randn(2, 3, 5) * torch.tensor([1.0, 50.0])[:, None, None], dim=(-2, -1)
    )
    torch.testing.assert_close(
        per_task.std(dim=(-2, -1), unbiased=False), torch.ones(2), atol=1e-4, rtol=0
    )


def test_linear_baseline_recovers_a_linear_target_per_task() -> None:
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(3, 5, 10, 2, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 5, 10, dtype=torch.float64)
    mask[:, :, 8:] = 0.0
    baseline = LinearFeatureBaseline(reg_coeff=1e-10, time_scale=10.0)
    feats = baseline.features(obs, mask)
    true_w = torch.randn(3, feats.shape[-1], generator=g, dtype=torch.float64)
    target = torch.einsum("tehf,tf->teh", feats, true_w)
    baseline.fit(obs, target, mask)
    torch.testing.assert_close(baseline.weights, true_w, atol=1e-6, rtol=1e-6)
    pred = baseline.predict(obs, mask)
    torch.testing.assert_close(pred, target * mask)
    # closed form per task equals numpy's lstsq on that task alone (no leakage between tasks)
    x = feats[1].reshape(-1, feats.shape[-1]).numpy()
    w_np = np.linalg.lstsq(x, target[1].reshape(-1).numpy(), rcond=None)[0]
    np.testing.assert_allclose(baseline.weights[1].numpy(), w_np, atol=1e-6)


def test_linear_baseline_survives_degenerate_features() -> None:
    obs = torch.zeros(2, 1, 4, 3)  # all-zero obs: X^T X singular without the ridge
    mask = torch.ones(2, 1, 4)
    b = LinearFeatureBaseline(reg_coeff=0.0).fit(obs, torch.ones(2, 1, 4), mask)
    assert torch.isfinite(b.predict(obs, mask)).all()


def test_linear_baseline_obs_dims_fits_on_the_trailing_entries_only() -> None:
    g = torch.Generator().manual_seed(2)
    obs = torch.randn(2, 4, 6, 5, generator=g, dtype=torch.float64)
    mask = torch.ones(2, 4, 6, dtype=torch.float64)
    returns = torch.randn(2, 4, 6, generator=g, dtype=torch.float64)
    narrow = LinearFeatureBaseline(obs_dims=2)
    assert narrow.features(obs, mask).shape[-1] == 2 * 2 + 4
    narrow.fit(obs, returns, mask)
    # same fit as the full baseline given only the last two entries: leading ones are ignored
    full = LinearFeatureBaseline().fit(obs[..., -2:], returns, mask)
    torch.testing.assert_close(narrow.weights, full.weights)
    scrambled = obs.clone()
    scrambled[..., :3] = torch.randn(2, 4, 6, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(narrow.predict(scrambled, mask), narrow.predict(obs, mask))
    with pytest.raises(ValueError, match="obs_dims"):
        LinearFeatureBaseline(obs_dims=0)
