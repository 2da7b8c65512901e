"""The exact estimator inside the MAML core: ``meta.estimator: exact`` plugs the trading
family's expected-P&L objective into the one inner loop and the Adam meta-update."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch.func import grad
from typer.testing import CliRunner

from metatrade.agents.policies import NetworkConfig, make_policy
from metatrade.cli import app
from metatrade.data import DataLoader, HeldOut
from metatrade.envs.nav2d import Navigation2DFamily
from metatrade.envs.trading import TradingTaskFamily
from metatrade.exact.objective import exact_loss
from metatrade.market.config import TradingEnvConfig
from metatrade.meta import MetaConfig, MetaLearner
from metatrade.meta.adapt import StoredBatches, adapt
from metatrade.meta.estimators import ExactSource, make_source
from metatrade.meta.inner import expand_to_tasks
from metatrade.meta.objective import outer_loss, per_task_losses

runner = CliRunner()


def _family() -> TradingTaskFamily:
    long_bars = ("45", "60", "120", "180", "240")
    loader = DataLoader(heldout=HeldOut(instruments=("Finnifty",), timeframes=long_bars))
    env_cfg = TradingEnvConfig(lookback=4, episode_length=16, observation="position")
    return TradingTaskFamily(loader, env_cfg, period="train", seed=0)


def _policy(family: TradingTaskFamily) -> torch.nn.Module:
    probe = family.make_batch_env(
        family.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1
    )
    return make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(8,)),
        probe.observation_space,
        probe.action_space,
        seed=0,
    ).double()


def test_meta_gradient_is_the_exact_second_order_gradient_of_the_meta_objective() -> None:
    """The learner's path (ExactSource -> adapt -> outer_loss -> autograd) gives
    d/d theta of mean_i J_eval_i(theta - alpha grad J_adapt_i(theta)), computed here task by
    task with torch.func (float64): the meta-gradient through the inner step is exact."""
    family = _family()
    policy = _policy(family)
    cfg = MetaConfig(
        estimator="exact",
        optimizer="adam",
        inner_lr=0.7,
        meta_batch_size=3,
        episodes_per_task=2,
        num_evaluation_episodes=2,
    )
    tasks = family.sample_tasks(3, task_set="train", rng=np.random.default_rng(1))
    source = make_source(policy, family, tasks, config=cfg, rng=np.random.default_rng(2))
    assert isinstance(source, ExactSource)
    adapt_w = source.adapt_batch.to(torch.float64)
    eval_w = source.eval_batch.to(torch.float64)
    theta = {k: v.detach().clone().requires_grad_() for k, v in policy.named_parameters()}

    steps = adapt(
        policy,
        expand_to_tasks(theta, 3),
        StoredBatches([adapt_w], family.objective_loss),
        config=cfg,
        second_order=True,
    )
    loss = outer_loss(policy, steps[-1], eval_w, family.objective_loss)
    got = torch.autograd.grad(loss, list(theta.values()))

    def meta_objective(params: dict, i: int) -> torch.Tensor:
        def one(w, p: dict) -> torch.Tensor:
            task = type(w).from_tensors({k: v[i] for k, v in w.tensors().items()})
            return exact_loss(policy, p, task)

        g = grad(lambda p: one(adapt_w, p))(params)
        adapted = {k: params[k] - 0.7 * g[k] for k in params}
        return one(eval_w, adapted)

    detached = {k: v.detach() for k, v in theta.items()}
    want = [torch.zeros_like(v) for v in detached.values()]
    for i in range(3):
        g = grad(meta_objective)(detached, i)
        want = [w + g[k] / 3 for w, k in zip(want, detached, strict=True)]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert any(v.abs().sum() > 0 for v in got)


def test_exact_meta_training_updates_theta_and_logs_the_objective() -> None:
    family = _family()
    policy = _policy(family).float()
    cfg = MetaConfig(
        estimator="exact",
        optimizer="adam",
        lr=1e-2,
        inner_lr=0.5,
        meta_batch_size=2,
        episodes_per_task=2,
        num_evaluation_episodes=2,
    )
    learner = MetaLearner(policy, family, cfg)
    before = {k: v.detach().clone() for k, v in learner.params.items()}
    stats = learner.step(rng=np.random.default_rng(5))
    assert stats["meta/skipped"] == 0.0 and np.isfinite(stats["meta/grad_norm"])
    # the logged returns (read off the losses the iteration computed, no second forward) are
    # the expected P&L, recomputed here from scratch: of theta on the task batch's adaptation
    # windows, and of theta - alpha grad on the evaluation windows that follow them
    rng = np.random.default_rng(5)
    tasks = family.sample_tasks(2, task_set="train", rng=rng)
    adapt_w, eval_w = family.objective_batches(tasks, num_windows=2, num_eval_windows=2, rng=rng)
    theta = expand_to_tasks(before, 2)
    pre = -per_task_losses(policy, theta, adapt_w, family.objective_loss)
    adapted = {}
    for i in range(2):
        task_w = type(adapt_w).from_tensors({k: v[i] for k, v in adapt_w.tensors().items()})
        p = {k: v.clone().requires_grad_() for k, v in before.items()}
        g = torch.autograd.grad(family.objective_loss(policy, p, task_w), list(p.values()))
        adapted[i] = {k: v - 0.5 * gk for (k, v), gk in zip(before.items(), g, strict=True)}
    stacked = {k: torch.stack([adapted[i][k] for i in range(2)]) for k in before}
    post = -per_task_losses(policy, stacked, eval_w, family.objective_loss)
    assert stats["meta/return_pre"] == pytest.approx(pre.mean().item(), rel=1e-5)
    assert stats["meta/return_post"] == pytest.approx(post.mean().item(), rel=1e-5)
    assert stats["meta/return_post"] != pytest.approx(stats["meta/return_pre"], rel=1e-3)
    assert "meta/kl" not in stats  # no behaviour policy to take a KL against
    assert any(not torch.equal(before[k], v.detach()) for k, v in learner.params.items())


def test_exact_estimator_is_refused_where_it_cannot_work() -> None:
    with pytest.raises(ValueError, match="optimizer 'adam'"):
        MetaConfig(estimator="exact", optimizer="trpo")
    with pytest.raises(ValueError, match="multi_step_loss"):
        MetaConfig(estimator="exact", optimizer="adam", num_inner_steps=2, multi_step_loss=True)
    nav = Navigation2DFamily()
    probe = nav.make_batch_env(
        nav.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1
    )
    policy = make_policy(
        NetworkConfig(kind="mlp", hidden_sizes=(4,)), probe.observation_space, probe.action_space
    )
    learner = MetaLearner(policy, nav, MetaConfig(estimator="exact", optimizer="adam"))
    with pytest.raises(TypeError, match="exact objective"):
        learner.step()
    full_obs = TradingTaskFamily(_family().loader, TradingEnvConfig(lookback=4, episode_length=16))
    with pytest.raises(ValueError, match="observation: position"):
        full_obs.objective_batches(
            [("Nifty", "5")], num_windows=1, num_eval_windows=1, rng=np.random.default_rng(0)
        )


def _exact_config(tmp_path: Path) -> Path:
    """configs/tiny.yaml with the exact estimator (position-only observation)."""
    from metatrade.training.config import packaged_config

    raw = yaml.safe_load(packaged_config("tiny").read_text())
    raw["env"]["observation"] = "position"
    raw["meta"].update(estimator="exact", inner_lr=1.0)
    path = tmp_path / "tiny_exact.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_cli_meta_train_and_evaluate_with_the_exact_estimator(tmp_path: Path) -> None:
    """meta-train -> evaluate end to end with meta.estimator: exact, on the embedded data and
    on a user's folder holding only the evaluated task: adaptation happens (k = 1 differs
    from k = 0) and every number is measured in the ledger."""
    config = _exact_config(tmp_path)
    run = tmp_path / "run"
    res = runner.invoke(app, ["meta-train", "-c", str(config), "--out", str(run), "-n", "2"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load((run / "config.yaml").read_text())["meta"]["estimator"] == "exact"
    user = tmp_path / "mydata"
    user.mkdir()
    src = DataLoader().task_path("Finnifty", "60")
    (user / src.name).write_bytes(src.read_bytes())
    for extra in ([], ["--data", str(user), "--tasks", "Finnifty:60"]):
        out = tmp_path / f"eval{len(extra)}"
        res = runner.invoke(app, ["evaluate", "--checkpoint", str(run), "--out", str(out), *extra])
        assert res.exit_code == 0, res.output
        table = pd.read_csv(next(out.rglob("evaluation.csv")))
        maml = table[table.method == "MAML"].set_index("k")
        assert maml.loc[0, "return_mean"] != maml.loc[1, "return_mean"]
        flat = table[table.method == "flat"].iloc[0]
        assert flat.return_mean == 0.0 and np.isfinite(maml.backtest_return).all()


def test_pretraining_on_the_objective_is_seeded_and_leaves_the_policy_alone() -> None:
    """The fair baseline of the exact estimator: Adam on the mean objective of task batches,
    the same budget of gradient evaluations as MAML; same rng seed, same parameters."""
    from metatrade.meta.pretrain import gradient_evaluations_per_iteration, pretrain_on_objective

    family = _family()
    policy = _policy(family).float()
    before = {k: v.detach().clone() for k, v in policy.named_parameters()}
    cfg = MetaConfig(
        estimator="exact",
        optimizer="adam",
        lr=1e-2,
        meta_batch_size=2,
        episodes_per_task=2,
        num_evaluation_episodes=2,
    )
    steps = 2 * gradient_evaluations_per_iteration(cfg)  # two MAML iterations' worth
    assert steps == 4
    a, losses = pretrain_on_objective(
        policy, family, config=cfg, num_steps=steps, rng=np.random.default_rng(3)
    )
    b, _ = pretrain_on_objective(
        policy, family, config=cfg, num_steps=steps, rng=np.random.default_rng(3)
    )
    assert len(losses) == steps and np.isfinite(losses).all()
    # the first step's loss: the mean of the adaptation and the evaluation windows' objectives
    rng = np.random.default_rng(3)
    tasks = family.sample_tasks(2, task_set="train", rng=rng)
    halves = family.objective_batches(tasks, num_windows=2, num_eval_windows=2, rng=rng)
    theta = expand_to_tasks(before, len(tasks))
    first = sum(per_task_losses(policy, theta, w, family.objective_loss).mean() for w in halves)
    assert losses[0] == pytest.approx(float(first) / 2, rel=1e-6, abs=1e-9)
    for k, v in policy.named_parameters():
        assert torch.equal(v.detach(), before[k])  # the module is untouched
        assert torch.equal(a[k], b[k]) and not torch.equal(a[k], before[k])


def test_cli_walkforward_and_signal_on_an_exact_run(tmp_path: Path) -> None:
    """`metatrade walkforward` and `signal` on a real meta-training run (exact estimator,
    position-only observation): the report is written and named; the signal adapts on the
    rows just before its decision (no look-ahead), the adapted policy decides otherwise than
    the meta-policy, and the same command gives the same decision."""
    import json

    run = tmp_path / "run"
    config = _exact_config(tmp_path)
    res = runner.invoke(app, ["meta-train", "-c", str(config), "--out", str(run), "-n", "2"])
    assert res.exit_code == 0, res.output
    geometry = ["--fold-bars", "10", "--adapt-bars", "40"]
    res = runner.invoke(app, ["walkforward", "--checkpoint", str(run), *geometry])
    assert res.exit_code == 0, res.output
    html = Path(res.output.strip().splitlines()[-1].removeprefix("report: "))
    assert html.is_file() and html.parent == run / "walkforward"
    assert {"MAML@k0", "MAML@k1", "buy-and-hold"} <= set(pd.read_csv(html.with_suffix(".csv")).row)
    signals = []
    for steps in ("1", "0", "1"):
        args = ["signal", "--checkpoint", str(run), *geometry, "-k", steps, "--format", "json"]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        signals.append(json.loads(res.stdout)[0])
    adapted, meta_policy, again = signals
    assert adapted["task"] == "Finnifty:60" and adapted["steps"] == 1
    assert adapted["adapt_rows"] == [adapted["decision_row"] - 40, adapted["decision_row"]]
    assert adapted == again

    def probabilities(signal: dict) -> np.ndarray:
        return np.array([v for k, v in sorted(signal.items()) if k.startswith("p_")])

    assert np.abs(probabilities(adapted) - probabilities(meta_policy)).max() > 1e-4
