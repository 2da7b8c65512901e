"""The whole run's configuration: typed sections loaded from YAML and validated up front.

One ``RunConfig`` holds everything a run needs (data, environment, policy, meta-learning,
PPO, evaluation, run bookkeeping). Loading validates every key before any work starts: an
unknown key or a bad value raises ``ConfigError`` naming the file and the key path, e.g.
``configs/tiny.yaml: meta.inner_lr: expected a positive number, got 'abc'``. The resolved
config (defaults filled in, CLI overrides applied) is written into the run directory so that
a run can be reproduced and resumed from it alone.

Every field below carries a one-line description; ``docs/configuration.md`` is the reference.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from metatrade.errors import ConfigError
from metatrade.io import atomic_write_text
from metatrade.market.family import ObjectiveSettings
from metatrade.training import sections
from metatrade.training.sections import (
    DataSection,
    EnvSection,
    EvaluationSection,
    MetaSection,
    PolicySection,
    PPOSection,
    RunSection,
    TuneSection,
    check_task,
)

__all__ = ["ConfigError", "RunConfig", "load_config", "save_config", "validate_config"]


class RunConfig(sections._Section):
    """Everything a run needs. ``RunConfig()`` is a valid default configuration."""

    data: DataSection = Field(default_factory=DataSection)
    env: EnvSection = Field(default_factory=EnvSection)
    policy: PolicySection = Field(default_factory=PolicySection)
    meta: MetaSection = Field(default_factory=MetaSection)
    objective: ObjectiveSettings = Field(default_factory=ObjectiveSettings)
    ppo: PPOSection = Field(default_factory=PPOSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    run: RunSection = Field(default_factory=RunSection)
    tune: TuneSection = Field(default_factory=TuneSection)

    @model_validator(mode="after")
    def _tune_paths_exist(self) -> RunConfig:
        known = self.model_dump(mode="json")
        for path in self.tune.space:
            node: Any = known
            for part in path.split("."):
                if not isinstance(node, dict) or part not in node or part == "tune":
                    raise ValueError(
                        f"tune.space: got {path!r}, which is not a key of the config "
                        "(a dotted path such as meta.inner_lr)"
                    )
                node = node[part]
        return self

    @model_validator(mode="after")
    def _exact_needs_position_observation(self) -> RunConfig:
        if self.meta.estimator == "exact" and self.env.observation != "position":
            raise ValueError(
                "meta.estimator: exact needs env.observation: position (the policy sees the "
                "feature window and its position only, so its expected P&L is a recursion)"
            )
        return self

    @model_validator(mode="after")
    def _one_seed(self) -> RunConfig:
        if self.meta.seed not in (0, self.run.seed):
            raise ValueError(
                f"meta.seed={self.meta.seed}: the run's seed is run.seed; set it there"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON-safe) of every resolved value."""
        return self.model_dump(mode="json")

    def run_dir(self) -> Path:
        """The run directory: ``run.out_dir``, else ``runs/<run.name or family>-seed<seed>``."""
        if self.run.out_dir is not None:
            return Path(self.run.out_dir)
        return Path("runs") / f"{self.run.name or self.data.family}-seed{self.run.seed}"


def parse_tasks(text: str) -> list[str]:
    """Parse ``--tasks Nifty:5,Bank_Nifty:15`` into task names; ConfigError if malformed."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ConfigError("--tasks: expected 'Instrument:TF,...' (e.g. Nifty:5,Finnifty:15)")
    for t in names:
        try:
            check_task(t)
        except ValueError as err:
            raise ConfigError(f"--tasks: {err} in {text!r}") from None
    return names


def _format_error(err: dict[str, Any]) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "<root>"
    kind = err["type"]
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"{path}: unknown key (check the spelling; see docs/configuration.md)"
    msg = err["msg"].removeprefix("Value error, ")
    if kind in ("float_parsing", "float_type"):
        msg = "expected a number"
    elif kind in ("int_parsing", "int_type", "int_from_float"):
        msg = "expected an integer"
    elif kind in ("bool_parsing", "bool_type"):
        msg = "expected true or false"
    elif kind == "greater_than":
        gt = err["ctx"]["gt"]
        msg = "expected a positive number" if gt == 0 else f"expected a value > {gt}"
    elif kind == "greater_than_equal":
        msg = f"expected a value >= {err['ctx']['ge']}"
    if "input" in err and kind not in ("missing",) and "got" not in msg:
        msg += f", got {err['input']!r}"
    return f"{path}: {msg}"


def validate_config(raw: dict[str, Any], source: str = "<config>") -> RunConfig:
    """Validate a nested dict into a RunConfig; ConfigError names ``source`` and the key path."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(e) for e in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; ConfigError for a missing file or bad YAML, naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None)
        raise ConfigError(
            f"{path}: not valid YAML{where}{': ' + problem if problem else ''}"
        ) from None
    return raw if raw is not None else {}


def packaged_config(name: str) -> Path:
    """Path of a config shipped inside the package (``metatrade/configs/<name>.yaml``)."""
    ref = resources.files("metatrade") / "configs" / f"{name}.yaml"
    return Path(str(ref))


def load_config(
    path: str | Path | None = None,
    *,
    seed: int | None = None,
    tasks: str | list[str] | None = None,
    data_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Load a YAML config (or the defaults), apply CLI overrides, validate everything.

    Args:
        path: YAML file; None = defaults. A bare name like ``"demo"`` that is not a file
            resolves to the packaged ``metatrade/configs/demo.yaml``.
        seed, tasks, data_dir, out_dir: the CLI's ``--seed``, ``--tasks``, ``--data``, ``--out``.
        overrides: extra dotted-key overrides, e.g. ``{"meta.num_meta_iterations": 2}``.
    """
    source = "<defaults>"
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file() and not p.suffix and packaged_config(str(path)).is_file():
            p = packaged_config(str(path))
        source = str(p)
        raw = read_yaml(p)
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top level")
    cfg = validate_config(raw, source)
    flat: dict[str, Any] = dict(overrides or {})
    if seed is not None:
        flat["run.seed"] = seed
    if tasks is not None:
        flat["data.tasks"] = parse_tasks(tasks) if isinstance(tasks, str) else list(tasks)
    if data_dir is not None:
        flat["data.data_dir"] = str(data_dir)
    if out_dir is not None:
        flat["run.out_dir"] = str(out_dir)
    return apply_overrides(cfg, flat)


def apply_overrides(cfg: RunConfig, flat: dict[str, Any]) -> RunConfig:
    """Return a new validated config with dotted keys replaced (``"meta.inner_lr": 0.05``)."""
    if not flat:
        return cfg
    raw = cfg.to_dict()
    for key, value in flat.items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {key}: unknown section {part!r}")
            node = node[part]
        node[parts[-1]] = value
    return validate_config(raw, "overrides")


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (what ``--resume`` and ``evaluate`` read back)."""
    return atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
