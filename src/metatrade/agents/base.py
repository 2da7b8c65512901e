"""``BaseAgent``: the small public surface every agent shares (SB3-like).

``select_action`` / ``predict`` (numpy in, numpy out; one observation or a batch),
``learn(source, budget)`` (train in place), ``adapt(batch_env, num_steps)`` (fine-tune a
copy on a new task), ``save_model`` / ``load_model``
(one checkpoint file, see ``agents/checkpoint.py``). ``load_model`` is both a classmethod
(``PPOAgent.load_model(path)`` builds a new agent) and an instance method
(``agent.load_model(path)`` loads in place after checking the checkpoint fits this agent's
observation and action spaces and network layout; a mismatch names the fields that differ).
"""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metatrade.agents.checkpoint import (
    CheckpointError,
    check_fields,
    load_checkpoint,
    save_checkpoint,
)
from metatrade.agents.policies import Policy, space_to_spec
from metatrade.meta.distributions import DiagGaussian


class _class_or_instance_method:
    """Descriptor: the wrapped function receives the class or the instance it was called on."""

    def __init__(self, func: Any) -> None:
        self.func = func
        for name in functools.WRAPPER_ASSIGNMENTS:  # name, doc...: what update_wrapper copies
            if hasattr(func, name):
                setattr(self, name, getattr(func, name))

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        return functools.partial(self.func, objtype if obj is None else obj)


class BaseAgent(ABC):
    """An agent: a policy network plus the way it learns and adapts.

    Subclasses set ``self.policy`` (a ``metatrade.agents.policies.Policy``),
    ``self.observation_space``, ``self.action_space`` and ``self.generator`` (a seeded
    ``torch.Generator`` for action sampling), and implement ``learn``, ``adapt`` and the
    checkpoint hooks ``_config`` / ``_state`` / ``_set_state`` / ``_from_config``.
    """

    policy: Policy
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Space
    generator: torch.Generator

    # ---- acting -----------------------------------------------------------------------
    def select_action(self, obs: np.ndarray, deterministic: bool = False) -> Any:
        """Action(s) for ``obs`` [obs_dim] or [..., obs_dim].

        Returns an ``int`` (discrete) or float32 [d] array (continuous) for one observation,
        or arrays [...] / [..., d] for a batch. Continuous actions are clipped to the action
        space's bounds (the policy's Gaussian is unbounded). ``deterministic`` takes the mode.
        """
        obs_arr = np.asarray(obs, dtype=np.float32)
        obs_dim = self.observation_space.shape[0]
        if obs_arr.ndim == 0 or obs_arr.shape[-1] != obs_dim:
            raise ValueError(
                f"select_action: observation shape {obs_arr.shape} does not end in obs_dim="
                f"{obs_dim} (the agent's observation_space {self.observation_space.shape})"
            )
        dtype = next(self.policy.parameters()).dtype
        with torch.no_grad():
            params = self._dist_params(torch.as_tensor(obs_arr, dtype=dtype))
            dist = self.policy.distribution
            act = dist.mode(params) if deterministic else dist.sample(params, self.generator)
        if isinstance(dist, DiagGaussian) and isinstance(self.action_space, gym.spaces.Box):
            low, high = self.action_space.low, self.action_space.high
            out = np.clip(act.cpu().numpy().astype(np.float32), low, high)
            return out
        out = act.cpu().numpy().astype(np.int64)
        return int(out) if obs_arr.ndim == 1 else out

    def _dist_params(self, obs: torch.Tensor) -> torch.Tensor:
        """Distribution parameters the agent acts with (override to act with other params)."""
        return self.policy(obs)

    def predict(self, obs: np.ndarray, deterministic: bool = False) -> tuple[Any, None]:
        """Stable-Baselines3's ``predict``: ``(action, None)`` (no recurrent state)."""
        return self.select_action(obs, deterministic=deterministic), None

    # ---- learning ---------------------------------------------------------------------
    # Each agent learns from its own source (a BatchEnv, a TaskFamily) with its own options,
    # so the base declares (*args, **kwargs): any signature may override it.
    @abstractmethod
    def learn(self, *args: Any, **kwargs: Any) -> BaseAgent:
        """``learn(source, budget, ...)``: train in place on ``source`` for ``budget`` units
        and return ``self``: PPO on a
        ``BatchEnv`` for ``budget`` environment steps, MAML on a ``TaskFamily`` for
        ``budget`` meta-iterations (SB3's ``learn(total_timesteps)``, with the data given
        here rather than at construction, since one agent trains on many tasks)."""

    @abstractmethod
    def adapt(self, *args: Any, **kwargs: Any) -> BaseAgent:
        """``adapt(batch_env, num_steps=1, ...)``: a copy fine-tuned on the single task of ``batch_env`` by ``num_steps`` gradient
        steps on fresh episodes; ``self`` is unchanged."""

    # ---- checkpoints ------------------------------------------------------------------
    @abstractmethod
    def _config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (everything ``_from_config`` needs)."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """Tensors to save (network and optimizer state)."""

    @abstractmethod
    def _set_state(self, state: dict[str, Any], path: str | os.PathLike[str]) -> None:
        """Load ``_state()``'s output back; raise ``CheckpointError`` on mismatch."""

    @classmethod
    @abstractmethod
    def _from_config(cls, config: dict[str, Any]) -> BaseAgent:
        """A fresh agent built from ``_config()``'s output."""

    def _compat(self) -> dict[str, Any]:
        """What a checkpoint must match to load into this agent."""
        return {
            "observation_shape": list(self.observation_space.shape),
            "action_space": space_to_spec(self.action_space),
            "policy": self.policy.spec,
        }

    def save_model(
        self, path: str | os.PathLike[str], *, run: Mapping[str, Any] | None = None
    ) -> None:
        """Write the agent to ``path`` atomically (loads with ``torch.load(weights_only=True)``).
        ``run``: the record of the run it belongs to (its run id), kept in the config."""
        config = {"agent": self._config(), **self._compat()}
        if run is not None:
            config["run"] = dict(run)
        save_checkpoint(path, type(self).__name__, config, self._state())

    @_class_or_instance_method
    def load_model(target: Any, path: str | os.PathLike[str], env: Any | None = None) -> BaseAgent:
        """Load an agent from ``path``.

        On the class, builds a new agent; on an instance, loads into it after checking the
        checkpoint's observation shape, action space and policy layout match. With ``env``,
        also checks the checkpoint fits ``env.observation_space`` / ``env.action_space``.

        Raises:
            CheckpointError: missing, corrupted, truncated or incompatible checkpoint.
        """
        cls: type[BaseAgent] = target if isinstance(target, type) else type(target)
        config, state = load_checkpoint(path, kind=cls.__name__)
        if not isinstance(config.get("agent"), dict):
            raise CheckpointError(f"checkpoint {path}: agent config is missing")
        if env is not None:
            check_fields(
                path,
                {
                    "observation_shape": list(env.observation_space.shape),
                    "action_space": space_to_spec(env.action_space),
                },
                config,
            )
        if isinstance(target, type):
            try:
                agent = cls._from_config(config["agent"])
            except (KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(
                    f"checkpoint {path}: agent config cannot build a {cls.__name__} ({exc})"
                ) from exc
        else:
            agent = target
            expected = agent._compat()
            # Compare policy fields one by one so the message names e.g. obs_dim.
            check_fields(path, expected["policy"], config.get("policy") or {})
            check_fields(
                path,
                {k: v for k, v in expected.items() if k != "policy"},
                config,
            )
        agent._set_state(state, path)
        return agent
