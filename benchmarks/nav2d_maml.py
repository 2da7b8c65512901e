r"""MAML on 2D navigation (Finn et al., 2017, sec. 5.3): the speed benchmark and the
configuration that reproduces the paper's Table 4.

Two presets:

* ``reference`` (default; ``configs/nav2d.yaml``): pytorch-maml-rl's
  ``configs/maml/2d-navigation.yaml``: 20 tasks x 20 trajectories, horizon 100, one inner
  step with lr 0.1, gamma 0.99, GAE lambda 1.0, MLP [64, 64] tanh, TRPO with max KL 0.01
  (cg 10 iterations, damping 1e-5, backtracking 0.8 x 15). The speed targets are measured
  on it (``--quick``).
* ``rllab-steps-2step-all``: the paper's own code's settings (cbfinn/maml_rl
  ``maml_trpo_point.py`` + ``test_maml_point.py``: actions normalised to [-1, 1], ReLU
  (100, 100), inner step 0.5, whole episodes until 2000 steps a task in training and 4000
  steps a goal at test, test step sizes 0.5 then 0.25), meta-trained for the test's two
  inner steps with the meta-loss over both steps' policies (``MetaConfig.multi_step_loss``,
  MAML++). This is the one that reproduces Table 4, on the paper's 40 test goals, seeds 1-4::

    for S in 1 2 3 4; do
      python benchmarks/nav2d_maml.py --preset rllab-steps-2step-all --iterations 100 \
        --eval-every 20 --seed $S
    done

Other commands::

    python benchmarks/nav2d_maml.py --quick     # timing: Adam and TRPO, its 5-16, < 45 s; also
                                                # the 16th iteration's returns (fixed by --seed)
    python benchmarks/nav2d_maml.py             # + TRPO training (500 its or ~10 min) and the
                                                #   return after 0..3 inner steps on test goals
    python benchmarks/nav2d_maml.py --preset P --evaluate-params p.pt  # re-test a saved state

TRPO's Fisher-vector products use a quarter of every task's episodes by default
(``--cg-subsample 0.25``, rllab's ``subsample_factor``; 1 for the exact Fisher).

Side by side with pytorch-maml-rl (the recipe is in ``benchmarks/nav2d_reference.py``)::

    METATRADE_MAML_RL_DIR=/work/ref/pytorch-maml-rl python benchmarks/nav2d_maml.py \
      --quick --cg-subsample 1.0 --threads 2 --rounds 2 [--compare-autograd]

alternates the reference and metatrade's TRPO for ``--rounds`` rounds and adds each round's
medians, load averages and the median ratio to the JSON line (like for like: every episode
in the Fisher, ``--cg-subsample 1.0``); without the reference ``--quick`` says it skipped it.

How the paper measured (``test_maml_point.py``): rllab's sampler collects whole episodes
until a batch holds 4000 steps, and the reported "AverageReturn" is the mean over that
batch's episodes; presets with ``test_steps_per_goal`` report both that
(``return_after_k``) and a fixed ``test_episodes`` per goal (``return_after_k_per_episode``).
The reported best meta-iteration is chosen on 40 validation goals (mean of the 1- and 2-step
returns), never on the test goals. Other presets and ablations (several negative results)
are in ``experiments/`` (``experiments/README.md``). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from metatrade.agents.policies import NetworkConfig, Policy, make_policy
from metatrade.envs.nav2d import Navigation2DFamily, NavTask
from metatrade.io import atomic_write
from metatrade.meta.learner import MetaConfig, MetaLearner
from metatrade.meta.updates import TRPOUpdate
from metatrade.runtime import configure_cpu
from metatrade.seeding import derive_seed
from nav2d_reference import (
    ENV_DIR,
    REFERENCE_COMMIT,
    find_reference,
    median_ratio,
    run_reference,
)

PAPER_TABLE4 = {0: -40.41, 1: -11.68, 2: -3.33, 3: -3.23}  # MAML, 2D navigation
# Standard error across the paper's 40 test goals, from the per-goal returns the original
# code saved (cbfinn/maml_rl icml/icml_point_results_maml.pkl): the paper reports no error.
PAPER_TABLE4_SE = {0: 2.07, 1: 1.12, 2: 0.29, 3: 0.30}


def paper_test_goals() -> list[NavTask]:
    """The 40 goals the paper's table was measured on: ``test_maml_point.py`` draws them
    with ``np.random.seed(1); np.random.uniform(-0.5, 0.5, size=(40, 2))``."""
    goals = np.random.RandomState(1).uniform(-0.5, 0.5, size=(40, 2))
    return [NavTask((float(x), float(y))) for x, y in goals]


@dataclass(frozen=True, kw_only=True)
class Preset:
    """One 2D-navigation setting: the policy, the inner loop in training and at test."""

    normalized_actions: bool  # the policy acts in [-1, 1], scaled to the env's +-0.1 (rllab)
    hidden_sizes: tuple[int, ...]
    activation: str
    inner_lr: float  # training inner step size (all steps, unless train_step_sizes)
    test_episodes: int  # episodes per goal and test step (the fixed-count protocol)
    test_step_sizes: tuple[float, ...]  # per test step; the last repeats
    test_steps_per_goal: int | None = None  # rllab's step-budget test batches
    train_inner_steps: int = 1
    train_steps_per_task: int | None = None  # rllab's training batches: 20 x 100 steps
    train_step_sizes: tuple[float, ...] | None = None  # per inner step in training
    multi_step_loss: bool = False  # meta-loss over every inner step's policies (MAML++)

    def make_policy(self, observation_space: Any, action_space: Any, seed: int) -> Policy:
        """The preset's MLP; experiments override this to change the initialisation."""
        return make_policy(
            NetworkConfig(kind="mlp", hidden_sizes=self.hidden_sizes, activation=self.activation),
            observation_space,
            action_space,
            seed=seed,
        )


REFERENCE = Preset(
    normalized_actions=False,
    hidden_sizes=(64, 64),
    activation="tanh",
    inner_lr=0.1,
    test_episodes=20,
    test_step_sizes=(0.1,),
)
"""pytorch-maml-rl's 2d-navigation.yaml, as configs/nav2d.yaml pins it"""

RLLAB = Preset(
    normalized_actions=True,
    hidden_sizes=(100, 100),
    activation="relu",
    inner_lr=0.5,
    test_episodes=40,
    test_step_sizes=(0.5, 0.25),
    test_steps_per_goal=4000,
)
"""the paper's code's policy, inner step and test protocol (experiments build on it)"""

TABLE4 = replace(
    RLLAB,
    train_steps_per_task=2000,
    train_inner_steps=2,
    train_step_sizes=(0.5, 0.25),
    multi_step_loss=True,
)
"""RLLAB with rllab's training batches, meta-trained for the test's two inner steps with the
meta-loss over both: reproduces Table 4 (``benchmarks/RESULTS.md``)"""

PRESETS = {"reference": REFERENCE, "rllab-steps-2step-all": TABLE4}


def make_learner(
    optimizer: str,
    *,
    seed: int,
    preset: Preset,
    cg_subsample: float = 1.0,
    meta_batch_size: int = 20,
    closed_form: bool = True,
) -> MetaLearner:
    family = Navigation2DFamily(normalized_actions=preset.normalized_actions)
    probe = family.make_batch_env(
        family.sample_tasks(1, task_set="train", rng=np.random.default_rng(0)), 1
    )
    policy = preset.make_policy(probe.observation_space, probe.action_space, seed)
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
    learner = MetaLearner(policy, family, cfg)
    if optimizer == "trpo" and not closed_form:  # the autograd Fisher product, for comparison
        learner.update = TRPOUpdate(closed_form=False)
    return learner


WARMUP_ITERATIONS = 4
"""untimed first iterations: first-call overheads, and the very first TRPO steps, whose line
search backtracks more than it does for the rest of a run"""


def time_iterations(
    optimizer: str,
    *,
    n: int,
    seed: int,
    cg_subsample: float,
    preset: Preset,
    closed_form: bool = True,
) -> tuple[float, list[float], dict[str, float]]:
    """Median wall time of meta-iterations WARMUP_ITERATIONS + 1 .. + n of a fresh learner,
    the times, and the last iteration's figures (fixed by the seed: a change that should
    not alter the maths must leave them as they were)."""
    learner = make_learner(
        optimizer, seed=seed, cg_subsample=cg_subsample, preset=preset, closed_form=closed_form
    )
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
        self, learner: MetaLearner, *, preset: Preset, num_goals: int, seed: int, paper_goals: bool
    ) -> None:
        self.learner, self.preset = learner, preset
        if paper_goals:
            self.goals = paper_test_goals()
        else:
            rng = np.random.default_rng(derive_seed(seed, "nav2d", "test goals"))
            self.goals = learner.family.sample_tasks(num_goals, task_set="test", rng=rng)
        # for choosing a meta-iteration: choosing it on the test goals would flatter it
        rng = np.random.default_rng(derive_seed(seed, "nav2d", "validation goals"))
        self.validation_goals = learner.family.sample_tasks(
            num_goals, task_set="validation", rng=rng
        )

    def evaluate(
        self,
        *,
        step_sizes: tuple[float, ...] | None = None,
        by_steps: bool = True,
        goals: list[NavTask] | None = None,
    ) -> tuple[dict[int, float], dict[int, float]]:
        """(mean return over the test goals, or ``goals``, its standard error across goals)
        after k steps; ``by_steps``: the preset's step-budget batches when it has them."""
        gen = torch.Generator().manual_seed(7)  # same test episodes' noise at every evaluation
        adaptation = replace(
            self.learner.config,
            episodes_per_task=self.preset.test_episodes,
            inner_step_sizes=step_sizes or self.preset.test_step_sizes,
            steps_per_task=self.preset.test_steps_per_goal if by_steps else None,
        )
        per_goal = self.learner.evaluate_adaptation_per_task(
            goals or self.goals,
            num_steps_list=(0, 1, 2, 3),
            adaptation=adaptation,
            generator=gen,
        )
        means = {k: v.mean().item() for k, v in per_goal.items()}
        ses = {k: (v.std() / math.sqrt(v.numel())).item() for k, v in per_goal.items()}
        return means, ses

    def final_report(self) -> dict[str, float]:
        """Every figure of the last JSON line that depends on the test goals, printed too."""
        returns, se = self.evaluate()
        # The original MAML code tested with step size 0.5, then 0.25 (test_maml_point.py).
        same = tuple(self.preset.test_step_sizes) == (0.5, 0.25)
        original_sizes = returns if same else self.evaluate(step_sizes=(0.5, 0.25))[0]
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


def build_parser(presets: dict[str, Preset]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="timing: median of its 5-16, Adam then TRPO")
    add("--iterations", type=int, default=500, help="max TRPO meta-iterations (full mode)")
    add("--time-budget", type=float, default=600.0, help="training wall-clock budget, s")
    add("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest under load)")
    add(
        "--cg-subsample",
        type=float,
        default=0.25,
        help="fraction of each task's episodes behind TRPO's Fisher (1.0: exact)",
    )
    add("--eval-every", type=int, default=100, help="evaluate on the test goals every N its")
    add(
        "--no-keep-memory",
        action="store_true",
        help="leave glibc's allocator as it is (metatrade.runtime.keep_freed_memory off)",
    )
    add("--meta-batch-size", type=int, default=20, help="tasks per meta-iteration (full mode)")
    add("--seed", type=int, default=1)
    add(
        "--reference",
        metavar="DIR",
        help="pytorch-maml-rl checkout to time side by side in --quick (default "
        "$METATRADE_MAML_RL_DIR; absent: skipped); recipe in benchmarks/nav2d_reference.py",
    )
    add("--reference-python", metavar="PATH", help="its venv's python (default DIR/../venv)")
    add("--rounds", type=int, default=2, help="interleaved reference/metatrade rounds (--quick)")
    add(
        "--compare-autograd",
        action="store_true",
        help="each round also times TRPO with the autograd Fisher product (before issue 23)",
    )
    add("--preset", choices=sorted(presets), default="reference")
    add("--test-tasks", type=int, default=40, help="fresh goals for the evaluation")
    add(
        "--fresh-goals",
        action="store_true",
        help="test on --test-tasks goals drawn from --seed instead of the paper's 40 test goals",
    )
    add(
        "--save-params",
        metavar="PATH",
        help="save the final meta-learner state (torch.save), and the validation-chosen one as "
        "PATH.selected",
    )
    add(
        "--evaluate-params",
        metavar="PATH",
        help="skip timing and training: test a state saved with --save-params",
    )
    return parser


def _learner(args: argparse.Namespace, preset: Preset) -> MetaLearner:
    return make_learner(
        "trpo",
        seed=args.seed,
        preset=preset,
        cg_subsample=args.cg_subsample,
        meta_batch_size=args.meta_batch_size,
    )


def _tester(learner: MetaLearner, args: argparse.Namespace, preset: Preset) -> Tester:
    return Tester(
        learner,
        preset=preset,
        num_goals=args.test_tasks,
        seed=args.seed,
        paper_goals=not args.fresh_goals,
    )


def _setting(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "cg_subsample": args.cg_subsample,
        "threads": args.threads,
        "keep_freed_memory": not args.no_keep_memory,
        "preset": args.preset,
        # both programs inherit it; unset is each one's fastest on a quiet machine
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
    }


def side_by_side(args: argparse.Namespace, preset: Preset) -> dict[str, Any]:
    """Interleaved rounds of the reference (pytorch-maml-rl) and metatrade's TRPO, each
    round's medians and their ratio; the TRPO of the last round is reported as ours."""
    ref = args.reference_install
    if ref is None or args.preset != "reference":
        print(f"reference: skipped (set {ENV_DIR} or --reference; reference preset only)")
        return {}
    rows: dict[str, list[float]] = {"reference": [], "metatrade": [], "load": []}
    for r in range(args.rounds):
        rows["load"].append(os.getloadavg()[0])
        ref_times = run_reference(
            ref, warmup=REFERENCE_WARMUP, timed=REFERENCE_TIMED, seed=args.seed
        )
        ours = time_iterations(
            "trpo",
            n=TIMED_ITERATIONS,
            seed=args.seed,
            cg_subsample=args.cg_subsample,
            preset=preset,
        )
        rows["reference"].append(statistics.median(ref_times))
        rows["metatrade"].append(ours[0])
        if args.compare_autograd:
            slow = time_iterations(
                "trpo",
                n=TIMED_ITERATIONS,
                seed=args.seed,
                cg_subsample=args.cg_subsample,
                preset=preset,
                closed_form=False,
            )
            rows.setdefault("autograd", []).append(slow[0])
            print(f"round {r + 1}: metatrade TRPO, autograd Fisher {slow[0]:.3f} s/iter")
        ratio = rows["reference"][-1] / ours[0]
        print(
            f"round {r + 1}: reference {rows['reference'][-1]:.2f} s/iter "
            f"({[round(t, 2) for t in ref_times]}), metatrade TRPO {ours[0]:.3f} s/iter: "
            f"{ratio:.1f}x (load {rows['load'][-1]:.1f})",
            flush=True,
        )
    autograd = rows.get("autograd")
    return {
        "sec_per_iter_reference_rounds": rows["reference"],
        "sec_per_iter_trpo_rounds": rows["metatrade"],
        **({"sec_per_iter_trpo_autograd_fisher_rounds": autograd} if autograd else {}),
        **(
            {"ratio_reference_over_trpo_autograd": median_ratio(rows["reference"], autograd)}
            if autograd
            else {}
        ),
        "load_average_rounds": rows["load"],
        "ratio_reference_over_trpo": median_ratio(rows["reference"], rows["metatrade"]),
        "reference_commit": REFERENCE_COMMIT,
    }


REFERENCE_WARMUP, REFERENCE_TIMED = 1, 3
"""the reference's untimed and timed meta-iterations per round (~6 s each on 2 cores)"""


def run_quick(args: argparse.Namespace, preset: Preset, adam: tuple) -> None:
    """Time TRPO after Adam (and the reference, interleaved, when installed); print the
    timings and the seed-fixed figures."""
    adam_med, _, adam_figures = adam
    trpo_med, trpo_times, trpo_figures = time_iterations(
        "trpo", n=TIMED_ITERATIONS, seed=args.seed, cg_subsample=args.cg_subsample, preset=preset
    )
    rounded = [round(t, 3) for t in trpo_times]
    print(f"trpo: median {trpo_med:.3f} s/iter over {TIMED_ITERATIONS} ({rounded})", flush=True)
    reference = side_by_side(args, preset)
    result = {
        "sec_per_iter_adam": adam_med,
        "sec_per_iter_trpo": trpo_med,
        **{f"adam_{k}": v for k, v in adam_figures.items()},
        **{f"trpo_{k}": v for k, v in trpo_figures.items()},
        "seed": args.seed,
        **_setting(args),
        **reference,
        "mode": "quick",
    }
    print(json.dumps(result))


def train(
    learner: MetaLearner, tester: Tester, args: argparse.Namespace
) -> tuple[Selection, list[float], float]:
    """TRPO meta-training within the iteration and time budgets, evaluating every
    ``--eval-every`` iterations; returns the selection, iteration times and wall time."""
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
            print(json.dumps(row), flush=True)
        if learner.iteration % args.eval_every == 0:  # outside the timed iteration
            selection.consider(learner, tester)
            means, ses = tester.evaluate()
            rounded = {f"se_{k}": round(v, 3) for k, v in ses.items()}
            print(json.dumps({"eval_iteration": learner.iteration, **means, **rounded}), flush=True)
    return selection, iter_times, time.perf_counter() - start


def run_full(args: argparse.Namespace, preset: Preset, adam_med: float) -> None:
    """Train, test the last and the validation-chosen iterations, print the JSON line."""
    learner = _learner(args, preset)
    tester = _tester(learner, args, preset)
    selection, iter_times, train_wall = train(learner, tester, args)
    if args.save_params:
        atomic_write(args.save_params, lambda f: torch.save(learner.state_dict(), f), binary=True)
    report = tester.final_report()
    if selection.last_considered != learner.iteration:
        selection.consider(learner, tester)
    chosen = _learner(args, preset)
    chosen.load_state_dict(selection.state)
    if args.save_params:  # beside the final state: PATH -> PATH.selected
        path = f"{args.save_params}.selected"
        atomic_write(path, lambda f: torch.save(chosen.state_dict(), f), binary=True)
    chosen_means, chosen_ses = _tester(chosen, args, preset).evaluate()
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
        **_setting(args),
        **{f"preset_{k}": v for k, v in asdict(preset).items()},
        "mode": "full",
    }
    print(json.dumps(result))


TIMED_ITERATIONS = 12


def main(argv: list[str] | None = None, presets: dict[str, Preset] = PRESETS) -> None:
    """The command line; ``experiments/`` calls it with more presets."""
    args = build_parser(presets).parse_args(argv)
    args.reference_install = (  # a bad path fails now, not after the timings
        find_reference(args.reference, args.reference_python) if args.quick else None
    )
    configure_cpu(args.threads, keep_memory=not args.no_keep_memory)
    preset = presets[args.preset]
    if args.evaluate_params:
        learner = _learner(args, preset)
        learner.load_state_dict(torch.load(args.evaluate_params, weights_only=True))
        report = _tester(learner, args, preset).final_report()
        print(json.dumps({"meta_iterations": learner.iteration, **report, "preset": args.preset}))
        return
    adam = time_iterations(
        "adam", n=TIMED_ITERATIONS, seed=args.seed, cg_subsample=1.0, preset=preset
    )
    rounded = [round(t, 3) for t in adam[1]]
    print(f"adam: median {adam[0]:.3f} s/iter over {TIMED_ITERATIONS} ({rounded})", flush=True)
    if args.quick:
        run_quick(args, preset, adam)
    else:
        run_full(args, preset, adam[0])


if __name__ == "__main__":
    main()
