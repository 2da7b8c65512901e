"""MAML on 2D navigation (Finn et al., 2017, sec. 5.3) with the reference config.

Config (pytorch-maml-rl ``configs/maml/2d-navigation.yaml``): 20 tasks x 20 trajectories,
horizon 100, one inner step with lr 0.1, gamma 0.99, GAE lambda 1.0, MLP [64, 64] tanh,
TRPO with max KL 0.01 (cg 10 iterations, damping 1e-5, backtracking 0.8 x 15).

    python benchmarks/nav2d_maml.py --quick     # timing only (Adam and TRPO, its 5-16), < 45 s
    python benchmarks/nav2d_maml.py             # + TRPO training (500 its or ~10 min) and the
                                                #   return after 0..3 inner steps on test goals
                                                #   (every --eval-every its; the iteration best on
                                                #   validation goals is re-tested on the test goals)

    python benchmarks/nav2d_maml.py --preset rllab   # the paper's own code's settings

TRPO's Fisher-vector products use a quarter of every task's episodes by default
(``--cg-subsample 0.25``, rllab's ``subsample_factor``; 1 for the exact Fisher): 2.5x
cheaper, and it learns like the exact one (``benchmarks/RESULTS.md``, fourth pass).

Presets: ``reference`` (default) is the config above, which the issue pins. ``rllab`` is the
original MAML code's (cbfinn/maml_rl ``maml_trpo_point.py`` + ``test_maml_point.py``):
actions normalised to [-1, 1] (rllab's ``normalize`` wrapper), ReLU (100, 100), inner lr 0.5,
test with step sizes 0.5 then 0.25 on batches of 4000 steps per goal. Everything else is
shared.

How the paper measured (``test_maml_point.py``): rllab's sampler collects whole episodes
until a batch holds 4000 steps, and the reported "AverageReturn" is the mean over that
batch's episodes. Episodes that reach the goal end early, so a step budget holds more of
them than a fixed count would, and they weigh more in the average. The ``rllab`` preset
reports both: ``return_after_k`` by the paper's step-budget protocol, and
``return_after_k_per_episode`` with a fixed 40 episodes per goal (every episode weighted
alike, the estimate of the expected return of one episode).

Test goals: by default the paper's own 40 (``np.random.seed(1)`` in ``test_maml_point.py``),
so the figures compare goal for goal; ``--fresh-goals`` draws ``--test-tasks`` new ones.
Two more presets are experiments on the two-step return: ``rllab-2step`` meta-trains for two
inner steps, ``rllab-steps`` also trains on rllab's step-budget batches (2000 steps a task).
``rllab-steps-2step`` meta-trains ``rllab-steps`` for the test's two steps (0.5, then 0.25), and
``rllab-steps-2step-all`` with the meta-loss averaged over the one- and two-step policies
(``MetaConfig.multi_step_loss``): the setting that matches the paper's one- and two-step
returns (``benchmarks/RESULTS.md``, fourth pass)::

    python benchmarks/nav2d_maml.py --preset rllab-steps-2step-all --iterations 100 --eval-every 20

    python benchmarks/nav2d_maml.py --preset rllab --cg-subsample 1 --save-params p.pt
    python benchmarks/nav2d_maml.py --preset rllab --evaluate-params p.pt  # re-test only

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from metatrade.agents.policies import make_policy
from metatrade.envs.nav2d import Navigation2DFamily, NavTask
from metatrade.io import atomic_write
from metatrade.meta.learner import MetaConfig, MetaLearner
from metatrade.runtime import configure_cpu

PAPER_TABLE4 = {0: -40.41, 1: -11.68, 2: -3.33, 3: -3.23}  # MAML, 2D navigation
# Standard error across the paper's 40 test goals, from the per-goal returns the original
# code saved (cbfinn/maml_rl icml/icml_point_results_maml.pkl): the paper reports no error.
PAPER_TABLE4_SE = {0: 2.07, 1: 1.12, 2: 0.29, 3: 0.30}


def paper_test_goals() -> list[NavTask]:
    """The 40 goals the paper's table was measured on: ``test_maml_point.py`` draws them
    with ``np.random.seed(1); np.random.uniform(-0.5, 0.5, size=(40, 2))``."""
    goals = np.random.RandomState(1).uniform(-0.5, 0.5, size=(40, 2))
    return [NavTask((float(x), float(y))) for x, y in goals]


@dataclass(frozen=True)
class Preset:
    normalized_actions: bool
    hidden_sizes: tuple[int, ...]
    activation: str
    inner_lr: float
    test_episodes: int
    test_step_sizes: tuple[float, ...]
    init_log_std: float = 0.0
    test_steps_per_goal: int | None = None  # rllab's step-budget batches (see --help)
    train_inner_steps: int = 1
    train_steps_per_task: int | None = None  # rllab's training batches: 20 x 100 steps
    xavier_init: bool = False  # Xavier-uniform weights instead of metatrade's (CleanRL's)
    train_step_sizes: tuple[float, ...] | None = None  # per inner step in training
    multi_step_loss: bool = False  # meta-loss over every inner step's policies (MAML++)


RLLAB_STEPS = Preset(True, (100, 100), "relu", 0.5, 40, (0.5, 0.25), 0.0, 4000, 1, 2000)
RLLAB_STEPS_2STEP = replace(RLLAB_STEPS, train_inner_steps=2, train_step_sizes=(0.5, 0.25))

PRESETS = {
    "reference": Preset(False, (64, 64), "tanh", 0.1, 20, (0.1,)),
    "rllab": Preset(True, (100, 100), "relu", 0.5, 40, (0.5, 0.25), test_steps_per_goal=4000),
    # ablation: the pinned config with rllab's normalised actions and nothing else changed
    "reference-normalized": Preset(True, (64, 64), "tanh", 0.1, 20, (0.1,)),
    # the pinned config with the Gaussian's initial std at the action bound (0.1) instead of
    # pytorch-maml-rl's 1.0, which the env clips to +-0.1 (bang-bang exploration)
    "reference-std0.1": Preset(False, (64, 64), "tanh", 0.1, 20, (0.1,), math.log(0.1)),
    # the rllab preset meta-trained for the return after two inner steps (the paper trains
    # for one); tested with its training step size 0.5 at every step
    "rllab-2step": Preset(True, (100, 100), "relu", 0.5, 40, (0.5,), 0.0, 4000, 2),
    # the rllab preset with rllab's training sampler too: batches of 2000 steps per task
    "rllab-steps": RLLAB_STEPS,
    # rllab-steps meta-trained for the return after two inner steps taken with the test's
    # own schedule (0.5, then 0.25); the paper trains for one step
    "rllab-steps-2step": RLLAB_STEPS_2STEP,
    # ... with the meta-loss averaged over the 1-step and the 2-step policies
    "rllab-steps-2step-all": replace(RLLAB_STEPS_2STEP, multi_step_loss=True),
    # rllab-steps with Xavier-uniform weights and zero biases in every layer (rllab's usual
    # layer default; a negative result: the initial policy drives away from the origin)
    "rllab-full": replace(RLLAB_STEPS, xavier_init=True),
}


def make_learner(
    optimizer: str,
    seed: int,
    cg_subsample: float = 1.0,
    preset: Preset = PRESETS["reference"],
    meta_batch_size: int = 20,
) -> MetaLearner:
    family = Navigation2DFamily(normalized_actions=preset.normalized_actions)
    probe = family.make_batch_env(family.sample_tasks(1, "train", np.random.default_rng(0)), 1)
    policy = make_policy(
        "mlp",
        probe.observation_space,
        probe.action_space,
        hidden_sizes=preset.hidden_sizes,
        activation=preset.activation,
        init_log_std=preset.init_log_std,
        seed=seed,
    )
    if preset.xavier_init:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in policy.named_parameters():
                if name.endswith("weight"):
                    bound = math.sqrt(6.0 / (param.shape[0] + param.shape[1]))
                    param.uniform_(-bound, bound, generator=gen)
    cfg = MetaConfig(
        meta_batch_size=meta_batch_size,
        episodes_per_task=20,
        num_evaluation_episodes=20,
        num_inner_steps=preset.train_inner_steps,
        steps_per_task=preset.train_steps_per_task,
        inner_lr=preset.inner_lr,
        inner_step_sizes=preset.train_step_sizes,
        multi_step_loss=preset.multi_step_loss,
        gamma=0.99,
        gae_lambda=1.0,
        optimizer=optimizer,
        max_kl=0.01,
        lr=1e-3,
        cg_subsample=cg_subsample,
        seed=seed,
    )
    return MetaLearner(policy, family, cfg)


WARMUP_ITERATIONS = 4
"""untimed first iterations: first-call overheads, and the very first TRPO steps, whose line
search backtracks more than it does for the rest of a run"""


def time_iterations(
    optimizer: str, n: int, seed: int, cg_subsample: float, preset: Preset
) -> tuple[float, list[float], dict[str, float]]:
    """Median wall time of meta-iterations WARMUP_ITERATIONS + 1 .. + n of a fresh learner,
    the times, and the last iteration's figures (fixed by the seed: a change that should
    not alter the maths must leave them as they were)."""
    learner = make_learner(optimizer, seed, cg_subsample, preset)
    for _ in range(WARMUP_ITERATIONS):
        learner.step()
    times = []
    stats: dict[str, float] = {}
    for _ in range(n):
        t0 = time.perf_counter()
        stats = learner.step()
        times.append(time.perf_counter() - t0)
    figures = {k: stats[f"meta/{k}"] for k in ("return_pre", "return_post", "loss")}
    return statistics.median(times), times, figures


class Tester:
    """The return after 0..3 inner steps on fixed fresh goals, by the preset's protocol."""

    def __init__(
        self, learner: MetaLearner, preset: Preset, num_goals: int, seed: int, paper_goals: bool
    ) -> None:
        self.learner, self.preset = learner, preset
        if paper_goals:
            self.goals = paper_test_goals()
        else:
            rng = np.random.default_rng(10_000 + seed)
            self.goals = learner.family.sample_tasks(num_goals, "test", rng)
        # for choosing a meta-iteration: choosing it on the test goals would flatter it
        rng = np.random.default_rng(20_000 + seed)
        self.validation_goals = learner.family.sample_tasks(num_goals, "validation", rng)

    def evaluate(
        self,
        step_sizes: tuple[float, ...] | None = None,
        by_steps: bool = True,
        goals: list[NavTask] | None = None,
    ) -> tuple[dict[int, float], dict[int, float]]:
        """(mean return over the test goals, or ``goals``, its standard error across goals)
        after k steps; ``by_steps``: the preset's step-budget batches when it has them."""
        gen = torch.Generator().manual_seed(7)  # same test episodes' noise at every evaluation
        per_goal = self.learner.evaluate_adaptation_per_task(
            goals or self.goals,
            (0, 1, 2, 3),
            episodes_per_task=self.preset.test_episodes,
            generator=gen,
            step_sizes=step_sizes or self.preset.test_step_sizes,
            steps_per_task=self.preset.test_steps_per_goal if by_steps else None,
        )
        means = {k: v.mean().item() for k, v in per_goal.items()}
        ses = {k: (v.std() / math.sqrt(v.numel())).item() for k, v in per_goal.items()}
        return means, ses

    def final_report(self) -> dict[str, float]:
        """Every figure of the last JSON line that depends on the test goals, printed too."""
        returns, se = self.evaluate()
        # The original MAML code tested with step size 0.5, then 0.25 (test_maml_point.py).
        same = tuple(self.preset.test_step_sizes) == (0.5, 0.25)
        original_sizes = returns if same else self.evaluate((0.5, 0.25))[0]
        report = {
            **{f"return_after_{k}": returns[k] for k in range(4)},
            **{f"return_after_{k}_se": se[k] for k in range(4)},
            **{f"paper_return_after_{k}": PAPER_TABLE4[k] for k in range(4)},
            **{f"paper_return_after_{k}_se": PAPER_TABLE4_SE[k] for k in range(4)},
            **{f"return_after_{k}_lr_0.5_0.25": original_sizes[k] for k in range(4)},
        }
        per_episode = None
        if self.preset.test_steps_per_goal is not None:
            per_episode, per_episode_se = self.evaluate(by_steps=False)
            report.update({f"return_after_{k}_per_episode": per_episode[k] for k in range(4)})
            report.update({f"return_after_{k}_per_episode_se": per_episode_se[k] for k in range(4)})
        for k in range(4):
            line = f"return after {k} inner steps: {returns[k]:8.2f} +- {se[k]:.2f}"
            if per_episode is not None:
                line += f" ({self.preset.test_steps_per_goal} steps/goal), "
                line += f"{per_episode[k]:8.2f} ({self.preset.test_episodes} episodes/goal)"
            line += f", {original_sizes[k]:8.2f} (lr 0.5, 0.25)"
            print(f"{line}   paper: {PAPER_TABLE4[k]:8.2f} +- {PAPER_TABLE4_SE[k]:.2f}")
        return report


class Selection:
    """The meta-iteration to report beside the last one, chosen on validation goals (never
    the test goals) by the mean of the returns after one and two inner steps: the two the
    issue compares with the paper."""

    def __init__(self) -> None:
        self.iteration = -1  # the best so far
        self.score = -math.inf
        self.state: dict | None = None
        self.last_considered = -1

    def consider(self, learner: MetaLearner, tester: Tester) -> None:
        self.last_considered = learner.iteration
        means, _ = tester.evaluate(goals=tester.validation_goals)
        score = (means[1] + means[2]) / 2
        print(
            json.dumps(
                {
                    "validation_iteration": learner.iteration,
                    **{k: round(v, 3) for k, v in means.items()},
                }
            ),
            flush=True,
        )
        if score > self.score:
            self.iteration, self.score, self.state = learner.iteration, score, learner.state_dict()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="timing only: median of meta-iterations 5-16 with Adam, then with TRPO",
    )
    parser.add_argument(
        "--iterations", type=int, default=500, help="max TRPO meta-iterations (full mode)"
    )
    parser.add_argument(
        "--time-budget", type=float, default=600.0, help="training wall-clock budget, s"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1 is fastest under load)"
    )
    parser.add_argument(
        "--cg-subsample",
        type=float,
        default=0.25,
        help="fraction of each task's episodes behind TRPO's Fisher (1.0: exact)",
    )
    parser.add_argument(
        "--eval-every", type=int, default=100, help="evaluate on the test goals every N its"
    )
    parser.add_argument(
        "--no-keep-memory",
        action="store_true",
        help="leave glibc's allocator as it is (metatrade.runtime.keep_freed_memory off)",
    )
    parser.add_argument(
        "--meta-batch-size",
        type=int,
        default=20,
        help="tasks per meta-iteration in full-mode training (the reference: 20)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="reference")
    parser.add_argument("--test-tasks", type=int, default=40, help="fresh goals for the evaluation")
    parser.add_argument(
        "--fresh-goals",
        action="store_true",
        help="test on --test-tasks goals drawn from --seed instead of the paper's 40 test goals",
    )
    parser.add_argument(
        "--save-params",
        metavar="PATH",
        help="save the final meta-learner state (torch.save), and the validation-chosen one as "
        "PATH.selected",
    )
    parser.add_argument(
        "--evaluate-params",
        metavar="PATH",
        help="skip timing and training: test a state saved with --save-params",
    )
    args = parser.parse_args()
    configure_cpu(args.threads, keep_memory=not args.no_keep_memory)
    preset = PRESETS[args.preset]

    if args.evaluate_params:
        learner = make_learner("trpo", args.seed, args.cg_subsample, preset, args.meta_batch_size)
        learner.load_state_dict(torch.load(args.evaluate_params, weights_only=True))
        tester = Tester(learner, preset, args.test_tasks, args.seed, not args.fresh_goals)
        report = tester.final_report()
        print(json.dumps({"meta_iterations": learner.iteration, **report, "preset": args.preset}))
        return

    timed = 12
    adam_med, adam_times, adam_figures = time_iterations("adam", timed, args.seed, 1.0, preset)
    print(
        f"adam: median {adam_med:.3f} s/iter over {timed} ({[round(t, 3) for t in adam_times]})",
        flush=True,
    )
    if args.quick:
        trpo_med, trpo_times, trpo_figures = time_iterations(
            "trpo", timed, args.seed, args.cg_subsample, preset
        )
        print(
            f"trpo: median {trpo_med:.3f} s/iter over {timed} ({[round(t, 3) for t in trpo_times]})",
            flush=True,
        )
        print(
            json.dumps(
                {
                    "sec_per_iter_adam": adam_med,
                    "sec_per_iter_trpo": trpo_med,
                    **{f"adam_{k}": v for k, v in adam_figures.items()},
                    **{f"trpo_{k}": v for k, v in trpo_figures.items()},
                    "seed": args.seed,
                    "cg_subsample": args.cg_subsample,
                    "threads": args.threads,
                    "keep_freed_memory": not args.no_keep_memory,
                    "preset": args.preset,
                    "mode": "quick",
                }
            )
        )
        return

    learner = make_learner("trpo", args.seed, args.cg_subsample, preset, args.meta_batch_size)
    tester = Tester(learner, preset, args.test_tasks, args.seed, not args.fresh_goals)
    curve = []
    selection = Selection()
    iter_times: list[float] = []
    start = time.perf_counter()
    while learner.iteration < args.iterations and time.perf_counter() - start < args.time_budget:
        t0 = time.perf_counter()
        stats = learner.step()
        iter_times.append(time.perf_counter() - t0)
        if learner.iteration % 25 == 0 or learner.iteration == 1:
            row = {
                "iteration": learner.iteration,
                "return_pre": round(stats["meta/return_pre"], 2),
                "return_post": round(stats["meta/return_post"], 2),
                "kl": round(stats["meta/kl"], 5),
                "sec_per_iter": round(statistics.median(iter_times[-25:]), 3),
                "elapsed_s": round(time.perf_counter() - start, 1),
            }
            curve.append(row)
            print(json.dumps(row), flush=True)
        if learner.iteration % args.eval_every == 0:  # outside the timed iteration
            selection.consider(learner, tester)
            means, ses = tester.evaluate()
            rounded = {f"se_{k}": round(v, 3) for k, v in ses.items()}
            print(json.dumps({"eval_iteration": learner.iteration, **means, **rounded}), flush=True)
    train_wall = time.perf_counter() - start
    if args.save_params:
        atomic_write(args.save_params, lambda f: torch.save(learner.state_dict(), f), binary=True)
    report = tester.final_report()
    if selection.last_considered != learner.iteration:
        selection.consider(learner, tester)
    chosen = make_learner("trpo", args.seed, args.cg_subsample, preset, args.meta_batch_size)
    chosen.load_state_dict(selection.state)
    if args.save_params:  # beside the final state: PATH -> PATH.selected
        path = f"{args.save_params}.selected"
        atomic_write(path, lambda f: torch.save(chosen.state_dict(), f), binary=True)
    chosen_means, chosen_ses = Tester(
        chosen, preset, args.test_tasks, args.seed, not args.fresh_goals
    ).evaluate()
    result = {
        "sec_per_iter_adam": adam_med,
        "sec_per_iter_trpo": statistics.median(iter_times),
        "meta_iterations": learner.iteration,
        **report,
        # the meta-iteration with the best validation score, tested on the test goals
        "selected_iteration": selection.iteration,
        "selected_validation_score": selection.score,
        **{f"selected_return_after_{k}": chosen_means[k] for k in range(4)},
        **{f"selected_return_after_{k}_se": chosen_ses[k] for k in range(4)},
        "train_wall_s": round(train_wall, 1),
        "meta_batch_size": args.meta_batch_size,
        "cg_subsample": args.cg_subsample,
        "threads": args.threads,
        "keep_freed_memory": not args.no_keep_memory,
        "preset": args.preset,
        **{f"preset_{k}": v for k, v in asdict(preset).items()},
        "mode": "full",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
