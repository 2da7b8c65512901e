"""Proximal Policy Optimization (Schulman et al., 2017) on any ``BatchEnv``.

Reads top to bottom like CleanRL's ``ppo.py``: config, networks, then per iteration
rollout -> GAE -> clipped-surrogate update -> logging. The ``BatchEnv``'s T tasks x E
episodes are flattened into N = T*E parallel environments, so one agent trains on one task
or many (multi-task pretraining, the main baseline of the meta-test).

Terminated and truncated are kept apart (Gymnasium semantics): the env autoresets in the
same step and hands the last observation in ``info["final_obs"]``; a truncated step
bootstraps from V(final_obs), a terminated one does not (``metatrade.meta.advantages.gae``).

Example:
    >>> agent = PPOAgent.from_env(batch_env, PPOConfig(n_steps=64))      # doctest: +SKIP
    >>> agent.learn(batch_env, total_timesteps=50_000)                    # doctest: +SKIP
    >>> agent.select_action(obs, deterministic=True)                      # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from metatrade.agents.base import BaseAgent
from metatrade.agents.checkpoint import (
    CheckpointError,
    env_state,
    load_env_state,
    load_module_state,
)
from metatrade.agents.networks.config import PolicyKind
from metatrade.agents.policies import make_policy, make_value_net, space_from_spec, space_to_spec
from metatrade.agents.ppo_config import PPOConfig
from metatrade.agents.ppo_rollout import Rollout, rollout_advantages, true_next_obs
from metatrade.agents.ppo_update import UpdateBatch, ppo_update
from metatrade.meta.protocols import BatchEnv
from metatrade.seeding import derive_seed

LogFn = Callable[[dict[str, float], int], None]
Callback = Callable[["PPOAgent", dict[str, float]], bool | None]


class PPOAgent(BaseAgent):
    """Clipped PPO with GAE, an entropy bonus and minibatch updates (CleanRL-style).

    Args:
        observation_space: ``Box(obs_dim,)`` of one environment.
        action_space: ``Discrete(n)`` or ``Box(d,)``.
        config: hyperparameters; ``PPOConfig()`` if omitted.
        window_shape, account_dim: trading observation layout (needed by the "gru" policy).
    """

    forced_policy_kind: ClassVar[PolicyKind | None] = None  # a subclass for one network family

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Space,
        config: PPOConfig | None = None,
        window_shape: tuple[int, int] | None = None,
        account_dim: int = 0,
    ) -> None:
        cfg = config or PPOConfig()
        if self.forced_policy_kind is not None and cfg.kind != self.forced_policy_kind:
            cfg = dataclasses.replace(cfg, kind=self.forced_policy_kind)
        self.config = cfg
        self.observation_space = observation_space
        self.action_space = action_space
        if window_shape is not None:
            seq_len, n_feat = window_shape
            window_shape = (int(seq_len), int(n_feat))
        self.window_shape = window_shape
        self.account_dim = int(account_dim)
        self.policy = make_policy(
            cfg,  # a PPOConfig is a NetworkConfig
            observation_space,
            action_space,
            window_shape=self.window_shape,
            account_dim=self.account_dim,
            seed=cfg.seed,
        )
        self.value = make_value_net(
            observation_space,
            kind=cfg.kind,
            hidden_sizes=cfg.hidden_sizes,
            activation=cfg.activation,
            window_shape=self.window_shape,
            account_dim=self.account_dim,
            seed=derive_seed(cfg.seed, "ppo", "value net"),
        )
        self.optimizer = self._make_optimizer(cfg.learning_rate)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.num_timesteps = 0
        self.num_resets = 0
        self.iteration = 0  # iterations of the current learn() (its anneal_lr schedule)
        self._obs: np.ndarray | None = None  # the env's current observations in learn()
        self._pending: dict[str, Any] | None = None  # rollout state a resumed learn() continues
        self._pending_path: str | os.PathLike[str] = ""
        self.logs: list[dict[str, float]] = []

    @classmethod
    def from_env(cls, env: BatchEnv, config: PPOConfig | None = None) -> PPOAgent:
        """An agent for ``env``'s spaces (and trading window layout, if the env has one)."""
        return cls(
            env.observation_space,
            env.action_space,
            config,
            window_shape=getattr(env, "window_shape", None),
            account_dim=getattr(env, "account_dim", 0),
        )

    def _make_optimizer(self, lr: float) -> torch.optim.Optimizer:
        params = [*self.policy.parameters(), *self.value.parameters()]
        return torch.optim.Adam(params, lr=lr, eps=1e-5)  # eps as in CleanRL / openai baselines

    # ---- learning ---------------------------------------------------------------------
    def learn(
        self,
        batch_env: BatchEnv,
        total_timesteps: int,
        callback: Callback | None = None,
        log_fn: LogFn | None = None,
        *,
        resume: bool = False,
    ) -> PPOAgent:
        """Train for ``total_timesteps`` environment steps (rounded up to whole rollouts).

        Each iteration collects ``n_steps`` steps from every one of the T*E environments,
        then runs ``update_epochs`` x ``num_minibatches`` clipped-surrogate updates. After
        each iteration the log dict (``rollout/``, ``train/``, ``time/`` keys) is appended to
        ``self.logs``, passed to ``log_fn(logs, num_timesteps)`` and to
        ``callback(agent, logs)``; a callback returning False stops training.
        ``training_state(env)`` called from either is a resumable snapshot.

        ``resume``: continue the ``learn`` that ``load_training_state`` saved (same env
        state, observations and iteration), so the run ends bit for bit where an
        uninterrupted one would; without it every call starts from a fresh env reset.
        """
        self._check_env(batch_env)
        num_iterations = self.num_iterations(batch_env, total_timesteps)
        if resume:
            obs = self._resume_rollout(batch_env)
        else:
            obs, self.iteration = self._reset(batch_env), 0
        while self.iteration < num_iterations:
            if self.config.anneal_lr:
                frac = 1.0 - self.iteration / num_iterations
                for group in self.optimizer.param_groups:
                    group["lr"] = frac * self.config.learning_rate
            obs, logs = self._iteration(batch_env, obs)
            self._obs, self.iteration = obs, self.iteration + 1
            self.logs.append(logs)
            if log_fn is not None:
                log_fn(logs, self.num_timesteps)
            if callback is not None and callback(self, logs) is False:
                break
        return self

    def num_iterations(self, batch_env: BatchEnv, total_timesteps: int) -> int:
        """PPO iterations ``learn`` runs for ``total_timesteps`` on ``batch_env``."""
        batch_size = self.config.n_steps * batch_env.num_tasks * batch_env.episodes_per_task
        return max(1, -(-int(total_timesteps) // batch_size))

    # ---- resumable training -----------------------------------------------------------
    def training_state(self, batch_env: BatchEnv) -> dict[str, Any]:
        """Everything to continue the current ``learn`` exactly: the agent's state, the
        env's (``agents.checkpoint.env_state``), the observations and episode tallies, and
        the iteration. Call it between iterations (``log_fn`` / ``callback``)."""
        return {
            "agent": self._state(),
            "rollout": {
                "iteration": self.iteration,
                "obs": torch.from_numpy(np.array(self._obs)),
                "ep_return": torch.from_numpy(self._ep_return.copy()),
                "ep_length": torch.from_numpy(self._ep_length.copy()),
                "env": env_state(batch_env),
            },
        }

    def load_training_state(self, state: dict[str, Any], path: str | os.PathLike[str]) -> None:
        """Load ``training_state``'s output; the next ``learn(..., resume=True)`` continues."""
        if not isinstance(state, dict) or not {"agent", "rollout"} <= set(state):
            raise CheckpointError(f"checkpoint {path}: holds no PPO training state")
        self._set_state(state["agent"], path)
        self._pending, self._pending_path = state["rollout"], path

    def _resume_rollout(self, batch_env: BatchEnv) -> np.ndarray:
        rollout = getattr(self, "_pending", None)
        if rollout is None:
            raise ValueError("learn(resume=True) needs load_training_state(...) first")
        try:
            load_env_state(batch_env, rollout["env"], self._pending_path)
            self.iteration = int(rollout["iteration"])
            self._ep_return = rollout["ep_return"].numpy().copy()
            self._ep_length = rollout["ep_length"].numpy().copy()
            obs = rollout["obs"].numpy().copy()
        except (KeyError, AttributeError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint {self._pending_path}: PPO rollout state is missing ({exc})"
            ) from exc
        self._pending = None
        return obs

    def adapt(
        self,
        batch_env: BatchEnv,
        num_steps: int = 1,
        learning_rate: float | None = None,
    ) -> PPOAgent:
        """Fine-tune a copy on a new task: ``num_steps`` PPO iterations (each one rollout of
        ``n_steps`` per environment and one update) with a fresh Adam at ``learning_rate``
        (default: the config's). ``self`` is left unchanged; returns the adapted copy."""
        self._check_env(batch_env)
        adapted = self.clone()
        adapted.optimizer = adapted._make_optimizer(
            self.config.learning_rate if learning_rate is None else learning_rate
        )
        obs = adapted._reset(batch_env)
        for _ in range(int(num_steps)):
            obs, logs = adapted._iteration(batch_env, obs)
            adapted.logs.append(logs)
        return adapted

    def clone(self) -> PPOAgent:
        """An independent copy (networks, optimizer and RNG state)."""
        twin = type(self)._from_config(self._config())
        twin._set_state(copy.deepcopy(self._state()), "<in-memory copy>")
        return twin

    # ---- one PPO iteration ------------------------------------------------------------
    def _reset(self, batch_env: BatchEnv) -> np.ndarray:
        obs = batch_env.reset(seed=derive_seed(self.config.seed, "ppo", "reset", self.num_resets))
        self.num_resets += 1
        self._ep_return = np.zeros(obs.shape[:2], dtype=np.float64)
        self._ep_length = np.zeros(obs.shape[:2], dtype=np.int64)
        return obs

    def _iteration(self, env: BatchEnv, obs: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """One rollout, GAE and update; returns the env's current obs and the logs."""
        start = time.perf_counter()
        obs, rollout = self.collect_rollout(env, obs)
        advantages, returns, values = self.compute_advantages(rollout)
        obs_dim = self.observation_space.shape[0]
        act_shape = self.policy.distribution.action_shape
        train_logs = ppo_update(
            policy=self.policy,
            value=self.value,
            optimizer=self.optimizer,
            generator=self.generator,
            cfg=self.config,
            batch=UpdateBatch(
                obs=rollout.obs.reshape(-1, obs_dim),
                actions=rollout.actions.reshape(-1, *act_shape),
                logprobs=rollout.logprobs.reshape(-1),
                advantages=advantages.reshape(-1),
                returns=returns.reshape(-1),
                values=values.reshape(-1),
            ),
        )
        elapsed = time.perf_counter() - start
        ep_returns, ep_lengths = rollout.episode_returns, rollout.episode_lengths
        logs: dict[str, float] = {
            "rollout/ep_rew_mean": float(np.mean(ep_returns)) if ep_returns else float("nan"),
            "rollout/ep_len_mean": float(np.mean(ep_lengths)) if ep_lengths else float("nan"),
            "rollout/episodes": float(len(ep_returns)),
            "rollout/reward_mean": float(rollout.rewards.mean()),
            **train_logs,
            "time/fps": rollout.rewards.numel() / max(elapsed, 1e-9),
            "time/total_timesteps": float(self.num_timesteps),
        }
        return obs, logs

    def collect_rollout(self, env: BatchEnv, obs: np.ndarray) -> tuple[np.ndarray, Rollout]:
        """Step all T*E environments ``n_steps`` times with the current policy.

        ``obs`` is the env's current observation [T, E, obs_dim]; returns the observation
        after the last step and a ``Rollout`` of tensors [n_steps, N=T*E, ...].
        """
        dist = self.policy.distribution
        dtype = next(self.policy.parameters()).dtype
        num_tasks, num_eps = env.num_tasks, env.episodes_per_task
        n, steps = num_tasks * num_eps, self.config.n_steps
        obs_dim = self.observation_space.shape[0]
        act_shape = dist.action_shape

        # Storage [steps, N, ...] (CleanRL layout). next_obs holds the TRUE next observation
        # (info["final_obs"] where an episode ended) for the truncation bootstrap.
        r = Rollout.zeros(steps, n, obs_dim, act_shape, dtype)
        for step in range(steps):
            obs_t = torch.as_tensor(obs.reshape(n, obs_dim), dtype=dtype)
            with torch.no_grad():
                dist_params = self.policy(obs_t)
                action = dist.sample(dist_params, self.generator)
                logprob = dist.log_prob(dist_params, action)
            env_action = action.numpy().reshape(num_tasks, num_eps, *act_shape)
            if isinstance(self.action_space, gym.spaces.Box):  # the env sees clipped actions
                env_action = np.clip(env_action, self.action_space.low, self.action_space.high)
            next_obs, reward, terminated, truncated, info = env.step(env_action)
            done = np.logical_or(terminated, truncated)
            true_next = true_next_obs(env, next_obs, done, info)

            r.obs[step] = obs_t
            r.next_obs[step] = torch.as_tensor(true_next.reshape(n, obs_dim), dtype=dtype)
            r.actions[step] = action
            r.logprobs[step] = logprob
            r.rewards[step] = torch.as_tensor(np.asarray(reward).reshape(n), dtype=dtype)
            r.terminated[step] = torch.as_tensor(np.asarray(terminated).reshape(n))
            r.dones[step] = torch.as_tensor(done.reshape(n))

            self._ep_return += reward
            self._ep_length += 1
            if done.any():
                r.episode_returns.extend(self._ep_return[done].tolist())
                r.episode_lengths.extend(self._ep_length[done].tolist())
                self._ep_return[done] = 0.0
                self._ep_length[done] = 0
            obs = next_obs
        self.num_timesteps += steps * n
        return obs, r

    def compute_advantages(self, rollout: Rollout) -> tuple[Tensor, Tensor, Tensor]:
        """GAE advantages, lambda-returns and values, each [n_steps, N]
        (``ppo_rollout.rollout_advantages``)."""
        return rollout_advantages(rollout, self.value, self.config)

    def _check_env(self, env: BatchEnv) -> None:
        if tuple(env.observation_space.shape) != tuple(self.observation_space.shape):
            raise ValueError(
                f"env observation shape {env.observation_space.shape} differs from the agent's "
                f"{self.observation_space.shape}: build the agent with PPOAgent.from_env(env)"
            )
        if space_to_spec(env.action_space) != space_to_spec(self.action_space):
            raise ValueError(
                f"env action space {env.action_space} differs from the agent's {self.action_space}"
            )

    # ---- checkpoint hooks -------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "observation_space": space_to_spec(self.observation_space),
            "action_space": space_to_spec(self.action_space),
            "window_shape": None if self.window_shape is None else list(self.window_shape),
            "account_dim": self.account_dim,
        }

    def _state(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "value": self.value.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "num_timesteps": self.num_timesteps,
            "num_resets": self.num_resets,
        }

    def _set_state(self, state: dict[str, Any], path: str | os.PathLike[str]) -> None:
        load_module_state(path, self.policy, state.get("policy"), "policy")
        load_module_state(path, self.value, state.get("value"), "value net")
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.generator.set_state(state["generator"])
            self.num_timesteps = int(state["num_timesteps"])
            self.num_resets = int(state.get("num_resets", 0))
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint {path}: optimizer or RNG state is missing or does not match ({exc})"
            ) from exc

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> PPOAgent:
        window = config.get("window_shape")
        observation_space = space_from_spec(config["observation_space"])
        if not isinstance(observation_space, gym.spaces.Box):
            raise TypeError(f"observation space {observation_space} is not a Box")
        return cls(
            observation_space,
            space_from_spec(config["action_space"]),
            PPOConfig.from_dict(config["config"]),
            window_shape=None if window is None else tuple(window),
            account_dim=config.get("account_dim", 0),
        )
