"""A run made from the Python API records what it used (issue #18, item 5).

Reproduction: the README's snippet (`Trainer(family, agent, run_dir=...)` with a
TradingTaskFamily of lookback 8, Finnifty held out) wrote a config.yaml of defaults
(lookback 32, episode 256, nothing held out), so `metatrade evaluate --checkpoint` on the
run failed with a shape mismatch and no hint; running the snippet again raised a
RunDirError that named only CLI flags.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from metatrade import (
    DataLoader,
    HeldOut,
    MAMLAgent,
    MetaConfig,
    TradingEnvConfig,
    TradingTaskFamily,
    Trainer,
)
from metatrade.cli.common import _load_run
from metatrade.io import RunDirError
from metatrade.training.checkpoint import load_run_checkpoint


def snippet(run_dir: Path, **trainer_kwargs) -> Trainer:
    """The README's Python example at a smaller budget (hidden 8, 24-bar episodes, 1 step)."""
    loader = DataLoader(heldout=HeldOut(instruments=("Finnifty",)))
    env_cfg = TradingEnvConfig(lookback=8, episode_length=24)
    family = TradingTaskFamily(loader, env_cfg, period="train")
    probe = family.make_batch_env(loader.sample_tasks(1, rng=0), 1)
    meta = MetaConfig(optimizer="adam", episodes_per_task=2)
    agent = MAMLAgent(probe.observation_space, probe.action_space, family, meta, hidden_sizes=(8,))
    trainer = Trainer(family, agent, run_dir=run_dir, progress=False, **trainer_kwargs)
    trainer.meta_train(
        num_meta_iterations=1, num_inner_loop_steps=1, num_evaluation_steps=2, meta_batch_size=2
    )
    return trainer


def test_a_python_api_run_records_its_settings_and_the_cli_loads_it(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    run = tmp_path / "quickstart"
    snippet(run)
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert (recorded["env"]["lookback"], recorded["env"]["episode_length"]) == (8, 24)
    assert recorded["data"]["heldout"]["instruments"] == ["Finnifty"]
    assert recorded["policy"]["hidden_sizes"] == [8]
    assert recorded["meta"]["optimizer"] == "adam" and recorded["meta"]["episodes_per_task"] == 2
    assert load_run_checkpoint(run)[0].to_dict() == recorded  # the checkpoint says the same
    # what `metatrade evaluate --checkpoint <run>` builds: the network of the run, its weights
    cfg, policy, _, loaded = _load_run(run, None, None, None, None)
    assert cfg.env.lookback == 8 and loaded.trained and "Finnifty:15" not in loaded.trained
    weights = load_run_checkpoint(run)[1]["learner"]["params"]
    assert all(torch.equal(p, weights[n]) for n, p in policy.named_parameters())

    # running the snippet again: one line naming both ways out, nothing touched
    before = (run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(RunDirError) as err:
        snippet(run)
    message = str(err.value)
    assert "\n" not in message and "overwrite=True" in message and "resume=" in message
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    trainer = snippet(run, overwrite=True)  # starts over, the old run moved aside
    assert trainer.replaced is not None and (trainer.replaced / "checkpoints" / "last.pt").is_file()


def test_a_python_api_run_records_its_action_space_features_and_costs() -> None:
    """Reproduction: the recorded config of a run with target actions, a feature selection
    and a cost preset said orders, every feature and the origin's costs (the keys were not
    recorded), so evaluating it rebuilt a different policy and market."""
    from dataclasses import asdict

    from metatrade.market.costs import cost_model
    from metatrade.training import build
    from metatrade.training.recorded import recorded_config

    loader = DataLoader(heldout=HeldOut(instruments=("Finnifty",)))
    chosen = TradingEnvConfig(
        lookback=8,
        episode_length=24,
        actions="target",
        features=("logret_1", "ret_1_lag0"),
        costs=cost_model("nse_index_futures"),
    )
    cfg = recorded_config(TradingTaskFamily(loader, chosen, period="train"), object())
    rebuilt = build.make_env_config(cfg)
    assert (rebuilt.actions, rebuilt.features) == ("target", ("logret_1", "ret_1_lag0"))
    assert rebuilt.costs is not None
    terms = {k: v for k, v in asdict(rebuilt.costs).items() if k != "name"}
    assert terms == {k: v for k, v in asdict(chosen.costs).items() if k != "name"}
    own = recorded_config(TradingTaskFamily(loader, TradingEnvConfig(), period="train"), object())
    assert own.env.costs is None  # each instrument's own costs, as the run had
