"""Checkpoints are verified on load (issue #11, item 4).

Reproduction: a checkpoint with bytes corrupted in place inside its tensor data loaded
(weights up to 1e29; a torch file stores tensor bytes uncompressed and unchecked) and
`backtest` ran on it with exit 0. Now the sha256 stored at save time does not match: a
clear ``CheckpointError`` naming the file and the fix, and the CLI exits non-zero.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from metatrade.agents.checkpoint import CheckpointError, content_hash, load_checkpoint
from metatrade.cli import app
from metatrade.training.build import make_family, make_policy_for
from metatrade.training.checkpoint import RNGStreams, load_run_checkpoint, save_run_checkpoint
from metatrade.training.config import load_config


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A real run checkpoint of the tiny trading config (its policy's initial weights)."""
    cfg = load_config("tiny")
    params = {k: v.detach() for k, v in make_policy_for(cfg, make_family(cfg)).named_parameters()}
    path = tmp_path_factory.mktemp("ck") / "last.pt"
    save_run_checkpoint(path, "MetaTrainer", cfg, 1, {"params": params}, RNGStreams(0))
    return path, params


def corrupt_tensor_bytes(source: Path, target: Path, tensor: torch.Tensor) -> None:
    """Copy ``source`` with 400 bytes flipped in the stored data of ``tensor``."""
    data = bytearray(source.read_bytes())
    raw = tensor.contiguous().numpy().tobytes()
    at = data.find(raw)
    assert at >= 0, "tensor data not found verbatim in the file"
    for i in range(at, at + min(400, len(raw))):
        data[i] ^= 0xFF
    target.write_bytes(bytes(data))


def test_saved_checkpoint_carries_a_hash_that_verifies(saved) -> None:
    path, params = saved
    payload = torch.load(path, weights_only=True)
    assert payload["version"] == 2 and payload["sha256"] == content_hash(payload)
    _, state = load_checkpoint(path)
    assert all(torch.equal(state["learner"]["params"][k], v) for k, v in params.items())


def test_flipped_bytes_in_tensor_data_are_a_checkpoint_error(saved, tmp_path: Path) -> None:
    path, params = saved
    bad = tmp_path / "corrupted.pt"
    corrupt_tensor_bytes(path, bad, max(params.values(), key=torch.numel))
    torch.load(bad, weights_only=True)  # torch itself still reads it without complaint
    with pytest.raises(CheckpointError, match="content hash mismatch") as err:
        load_run_checkpoint(bad)
    assert str(bad) in str(err.value) and "earlier checkpoint" in str(err.value)


def test_backtest_on_a_corrupted_checkpoint_exits_non_zero(saved, tmp_path: Path) -> None:
    path, params = saved
    bad = tmp_path / "corrupted.pt"
    corrupt_tensor_bytes(path, bad, max(params.values(), key=torch.numel))
    res = CliRunner().invoke(app, ["backtest", "--checkpoint", str(bad)])
    assert res.exit_code != 0
    assert "content hash mismatch" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "reports").exists()
