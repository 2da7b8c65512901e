"""``MAMLAgent``: the meta-learned policy behind the ``BaseAgent`` surface.

A thin wrapper over ``metatrade.meta.learner.MetaLearner``: ``learn`` runs meta-iterations
(sample tasks, adapt each, meta-update through the adaptation), ``adapt`` takes k inner
policy-gradient steps on a new task with the one inner loop (``metatrade.meta.adapt.adapt`` on
a ``SampledSource``: each step on fresh episodes sampled with the current adapted policy, as
in the MAML paper's test protocol), and
``select_action`` acts with the meta-parameters, or with the adapted ones on the copy that
``adapt`` returns. The policy can be any kind of ``make_policy`` (mlp, gru, moe); with
``policy_kind="moe"``, ``metatrade.agents.moe_agent.regime_report`` applies to it.

Example:
    >>> agent = MAMLAgent(env.observation_space, env.action_space, family)   # doctest: +SKIP
    >>> agent.learn(family, 100)                                 # doctest: +SKIP
    >>> fast = agent.adapt(family.make_batch_env([task], 20), num_steps=1)   # doctest: +SKIP
    >>> fast.select_action(obs, deterministic=True)                          # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

import gymnasium as gym
import torch
from torch import Tensor
from torch.func import functional_call

from metatrade.agents.base import BaseAgent
from metatrade.agents.checkpoint import CheckpointError
from metatrade.agents.policies import NetworkConfig, make_policy, space_from_spec, space_to_spec
from metatrade.meta.adapt import adapt_at_test_time
from metatrade.meta.estimators import SampledSource
from metatrade.meta.learner import MetaConfig, MetaLearner
from metatrade.meta.protocols import BatchEnv, TaskFamily
from metatrade.seeding import derive_seed

Params = dict[str, Tensor]


class MAMLAgent(BaseAgent):
    """A policy meta-trained with MAML.

    Args:
        observation_space, action_space: of one environment of the task family.
        task_family: where ``learn`` samples tasks (may be given later to ``learn``; an agent
            loaded only to adapt and act needs none).
        meta_config: MAML hyperparameters (``MetaConfig()``: the paper's defaults).
        policy_kind, hidden_sizes, activation, num_experts, init_log_std, window_shape,
            account_dim: the policy network (``metatrade.agents.policies.make_policy``).
    """

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Space,
        task_family: TaskFamily | None = None,
        meta_config: MetaConfig | None = None,
        policy_kind: str = "mlp",
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        num_experts: int = 4,
        init_log_std: float = 0.0,
        window_shape: tuple[int, int] | None = None,
        account_dim: int = 0,
        feature_groups: Sequence[int] | None = None,
    ) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.meta_config = meta_config or MetaConfig()
        network = NetworkConfig(
            kind=policy_kind,  # type: ignore[arg-type]  # validated by NetworkConfig
            hidden_sizes=tuple(hidden_sizes),
            activation=activation,  # type: ignore[arg-type]
            num_experts=num_experts,
            init_log_std=init_log_std,
        )
        self.policy = make_policy(
            network,
            observation_space,
            action_space,
            window_shape=window_shape,
            account_dim=account_dim,
            seed=self.meta_config.seed,
            feature_groups=feature_groups,
        )
        self.learner = MetaLearner(self.policy, task_family, self.meta_config)  # type: ignore[arg-type]
        adapt_seed = derive_seed(self.meta_config.seed, "agent", "adaptation")
        self.generator = torch.Generator().manual_seed(adapt_seed)
        self.adapted_params: Params | None = None  # set on the copy adapt() returns
        self.logs: list[dict[str, float]] = []

    @property
    def params(self) -> Params:
        """The parameters ``select_action`` uses: adapted ones if any, else theta (detached)."""
        if self.adapted_params is not None:
            return self.adapted_params
        return {k: v.detach() for k, v in self.learner.params.items()}

    def _dist_params(self, obs: Tensor) -> Tensor:
        return functional_call(self.policy, self.params, (obs,))

    # ---- learning ---------------------------------------------------------------------
    def learn(
        self,
        task_family: TaskFamily | None,
        num_meta_iterations: int,
        *,
        callback: Callable[[MAMLAgent, dict[str, float]], bool | None] | None = None,
        log_fn: Callable[[dict[str, float], int], None] | None = None,
    ) -> MAMLAgent:
        """Run ``num_meta_iterations`` meta-iterations (``MetaLearner.step``) on
        ``task_family`` (None: the family given to the constructor); logs carry ``meta/``
        and ``time/`` keys. A callback returning False stops early."""
        if task_family is not None:
            self.learner.family = task_family
        if self.learner.family is None:
            raise ValueError(
                "MAMLAgent.learn needs a task family: pass it here or to the constructor"
            )
        for _ in range(int(num_meta_iterations)):
            logs = self.learner.step()
            self.logs.append(logs)
            if log_fn is not None:
                log_fn(logs, self.learner.iteration)
            if callback is not None and callback(self, logs) is False:
                break
        return self

    def adapt(
        self,
        batch_env: BatchEnv,
        num_steps: int = 1,
        lr: float | None = None,
        num_rollout_steps: int | None = None,
    ) -> MAMLAgent:
        """A copy adapted to the single task of ``batch_env`` (T = 1, E episodes) by
        ``num_steps`` inner policy-gradient steps with step size ``lr`` (default: the
        config's inner_step_sizes, else its inner_lr at every step); each step samples fresh
        episodes with the current adapted policy.
        ``self`` (theta) is unchanged. ``num_steps=0`` returns an unadapted copy."""
        if batch_env.num_tasks != 1:
            raise ValueError(
                f"MAMLAgent.adapt adapts one task; the env has num_tasks={batch_env.num_tasks}. "
                "For many tasks at once call metatrade.meta.adapt.adapt_at_test_time(agent.policy, "
                "agent.params, source, ...) on a make_source batch source."
            )
        cfg = self.meta_config
        if lr is not None:
            cfg = replace(cfg, inner_lr=lr, inner_step_sizes=None)
        if num_rollout_steps is not None:
            cfg = replace(cfg, horizon=num_rollout_steps)
        adapted = self.clone()
        start = self.params if self.adapted_params is None else self.adapted_params
        steps = adapt_at_test_time(
            self.policy,
            start,
            SampledSource(self.policy, batch_env, config=cfg, generator=adapted.generator),
            config=cfg,
            num_tasks=1,
            inner_lrs=self.learner.inner_lrs,
            num_steps=int(num_steps),
        )
        if self.adapted_params is not None or num_steps > 0:
            adapted.adapted_params = {k: v[0].detach() for k, v in steps[-1].items()}
        return adapted

    def clone(self) -> MAMLAgent:
        """An independent copy (meta-parameters, optimizer, RNG and adapted state)."""
        twin = type(self)._from_config(self._config())
        twin.learner.family = self.learner.family
        twin._set_state(self._state(), "<in-memory copy>")
        return twin

    # ---- checkpoint hooks -------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        spec = self.policy.spec
        return {
            "meta_config": asdict(self.meta_config),
            "observation_space": space_to_spec(self.observation_space),
            "action_space": space_to_spec(self.action_space),
            "policy": {
                k: spec[k]
                for k in (
                    "kind",
                    "hidden_sizes",
                    "activation",
                    "num_experts",
                    "init_log_std",
                    "window_shape",
                    "account_dim",
                    "feature_groups",
                )
            },
        }

    def _state(self) -> dict[str, Any]:
        import copy

        return {
            "learner": copy.deepcopy(self.learner.state_dict()),
            "adapted": None
            if self.adapted_params is None
            else {k: v.detach().clone() for k, v in self.adapted_params.items()},
            "generator": self.generator.get_state(),
        }

    def _set_state(self, state: dict[str, Any], path: str | os.PathLike[str]) -> None:
        try:
            learner_state = state["learner"]
            shapes = {k: tuple(v.shape) for k, v in self.learner.params.items()}
            found = {k: tuple(v.shape) for k, v in learner_state["params"].items()}
            if shapes != found:
                raise CheckpointError(
                    f"checkpoint {path}: meta-parameters do not match the policy "
                    f"(checkpoint {found}, model {shapes})"
                )
            self.learner.load_state_dict(learner_state)
            adapted = state.get("adapted")
            self.adapted_params = (
                None if adapted is None else {k: v.clone() for k, v in adapted.items()}
            )
            self.generator.set_state(state["generator"])
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"checkpoint {path}: MAML state is missing or does not match ({exc})"
            ) from exc

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> MAMLAgent:
        pol = config["policy"]
        window = pol.get("window_shape")
        observation_space = space_from_spec(config["observation_space"])
        if not isinstance(observation_space, gym.spaces.Box):
            raise TypeError(f"observation space {observation_space} is not a Box")
        return cls(
            observation_space,
            space_from_spec(config["action_space"]),
            None,
            MetaConfig(**config["meta_config"]),
            policy_kind=pol["kind"],
            hidden_sizes=pol["hidden_sizes"],
            activation=pol["activation"],
            num_experts=pol["num_experts"],
            init_log_std=pol["init_log_std"],
            window_shape=None if window is None else tuple(window),
            account_dim=pol["account_dim"],
            feature_groups=pol.get("feature_groups"),  # linear policies; older checkpoints: None
        )
