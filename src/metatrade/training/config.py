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

from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_core import ArgsKwargs

from metatrade.errors import ConfigError
from metatrade.io import atomic_write_text
from metatrade.training import sections
from metatrade.training.env_section import EnvSection
from metatrade.training.sections import (
    DataSection,
    EvaluationSection,
    MetaSection,
    ObjectiveSection,
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
    objective: ObjectiveSection = Field(default_factory=ObjectiveSection)
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
        if self.meta.exact_objective and self.env.observation != "position":
            raise ValueError(
                "meta.estimator: exact needs env.observation: position (the policy sees the "
                "feature window and its position only, so its expected P&L is a recursion)"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _one_seed(cls, raw: Any) -> Any:
        """``meta.seed``, written by runs before the run had one seed, is read as an alias of
        ``run.seed``: dropped when it agrees (or is the old default 0), an error naming
        ``run.seed`` when it does not."""
        meta = raw.get("meta") if isinstance(raw, dict) else None
        if not isinstance(meta, dict) or "seed" not in meta:
            return raw
        run = raw.get("run") if isinstance(raw.get("run"), dict) else {}
        seed, run_seed = meta["seed"], run.get("seed", 0)
        if seed not in (0, run_seed):
            raise ValueError(
                f"meta.seed={seed}: a run has one seed, run.seed (here {run_seed}); set it there"
            )
        return {**raw, "meta": {k: v for k, v in meta.items() if k != "seed"}}

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


# The command-line options that set config keys: an error about an override names both.
CLI_OPTIONS = {
    "run.seed": "--seed",
    "data.tasks": "--tasks",
    "data.data_dir": "--data",
    "data.strict": "--strict",
    "run.out_dir": "--out",
    "meta.num_meta_iterations": "-n/--iterations",
    "ppo.total_timesteps": "--timesteps",
    "run.backend": "--backend",
    "run.address": "--address",
    "run.workers": "--workers",
}
_MAX_SHOWN = 60  # characters of a bad value shown in an error (never a whole section)


def _shown(value: Any) -> str | None:
    """A short repr of a bad value, or None for a section (the message names what is wrong)."""
    if isinstance(value, dict | ArgsKwargs) or (
        isinstance(value, list | tuple) and any(isinstance(v, dict) for v in value)
    ):
        return None
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


# Names other tools give a key, which no spelling distance finds.
_KNOWN_AS = {
    "path": "data.data_dir",
    "data_path": "data.data_dir",
    "dir": "data.data_dir",
    "folder": "data.data_dir",
    "iterations": "meta.num_meta_iterations",
    "timesteps": "ppo.total_timesteps",
    "window": "env.lookback",
}


def _config_keys(node: dict[str, Any], defs: dict[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key of a JSON-schema ``node`` of the config, sections included (``env``,
    ``env.costs``, ...; a section whose default is null too)."""
    keys = []
    for name, prop in node.get("properties", {}).items():
        keys.append(prefix + name)
        for option in (prop, *prop.get("anyOf", ())):
            section = defs.get(option.get("$ref", "").rsplit("/", 1)[-1], option)
            if "properties" in section:
                keys += _config_keys(section, defs, f"{prefix}{name}.")
                break
    return keys


def suggest_keys(loc: tuple[str, ...]) -> list[str]:
    """Keys close to the unknown key at ``loc``: its section's keys within a typo (difflib),
    else a key of that name in another section (``meta.lookback``: ``env.lookback``), else
    the key other tools' name stands for (``data.path``: ``data.data_dir``)."""
    import difflib

    schema = RunConfig.model_json_schema()
    keys = _config_keys(schema, schema.get("$defs", {}))
    section, leaf = ".".join(loc[:-1]), loc[-1]
    siblings = {k.rsplit(".", 1)[-1]: k for k in keys if k.rpartition(".")[0] == section}
    close = difflib.get_close_matches(leaf, list(siblings), n=3, cutoff=0.6)
    if close:
        return [siblings[c] for c in close]
    elsewhere = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    if elsewhere:
        return elsewhere[:2]
    return [_KNOWN_AS[leaf]] if leaf in _KNOWN_AS else []


def _format_error(err: Any, options: dict[str, str] | None = None) -> str:
    """One pydantic error as ``key.path: what is wrong, got <value>`` (short: no section
    dumped; ``options``: the command-line option that set a key, named beside it)."""
    path = ".".join(str(p) for p in err["loc"])
    if options and path in options:
        path = f"{options[path]} ({path})"
    kind = err["type"]
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        close = suggest_keys(tuple(str(p) for p in err["loc"]))
        hint = f"did you mean {' or '.join(close)}?" if close else "check the spelling;"
        return f"{path}: unknown key ({hint} docs/configuration.md lists every key)"
    msg = err["msg"].removeprefix("Value error, ")
    ctx = err.get("ctx", {})
    if kind in ("float_parsing", "float_type"):
        msg = "expected a number"
    elif kind in ("int_parsing", "int_type", "int_from_float"):
        msg = "expected an integer"
    elif kind in ("bool_parsing", "bool_type"):
        msg = "expected true or false"
    elif kind == "finite_number":
        msg = "expected a finite number (not inf or nan)"
    elif kind == "greater_than":
        msg = "expected a positive number" if ctx["gt"] == 0 else f"expected a value > {ctx['gt']}"
    elif kind == "greater_than_equal":
        msg = f"expected a value >= {ctx['ge']}"
    elif kind == "less_than_equal":
        msg = f"expected a value <= {ctx['le']}"
    elif kind == "less_than":
        msg = f"expected a value < {ctx['lt']}"
    shown = _shown(err.get("input"))
    if shown is not None and kind != "missing" and "got" not in msg:
        msg += f", got {shown}"
    return f"{path}: {msg}" if path else msg


# The linear value baseline's ridge solve is cubic in its features (two per observation
# entry): past this many entries it dominates a meta-iteration (lookback 400: minutes a fit).
BASELINE_MAX_OBS = 256


def _resolve_baseline(cfg: RunConfig) -> RunConfig:
    """``meta.baseline_obs_dims: null`` on a trading observation wider than
    ``BASELINE_MAX_OBS`` entries becomes the latest bar's features and the account (the
    trailing entries, what the value depends on most: ``LinearFeatureBaseline``), written
    into the resolved config so the run directory shows it."""
    m = cfg.meta
    if m.baseline_obs_dims is not None or m.estimator != "sampled" or cfg.data.family == "nav2d":
        return cfg
    from metatrade.data.features import FEATURE_NAMES
    from metatrade.market.config import ACCOUNT_NAMES

    account = len(ACCOUNT_NAMES) if cfg.env.observation == "full" else 1
    if cfg.env.lookback * len(FEATURE_NAMES) + account <= BASELINE_MAX_OBS:
        return cfg
    meta = replace(m, baseline_obs_dims=len(FEATURE_NAMES) + account)
    return cfg.model_copy(update={"meta": meta})


def validate_config(
    raw: dict[str, Any], source: str | None = "<config>", *, options: dict[str, str] | None = None
) -> RunConfig:
    """Validate a nested dict into a RunConfig; ConfigError names ``source`` and the key path
    (and, for keys in ``options``, the command-line option that set it)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return _resolve_baseline(RunConfig.model_validate(raw))
    except ValidationError as exc:
        lines = [_format_error(e, options) for e in exc.errors()]
        raise ConfigError((f"{source}: " if source else "") + "; ".join(lines)) from None


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
    options = {k: CLI_OPTIONS[k] for k in flat if k in CLI_OPTIONS}
    return validate_config(raw, None, options=options)  # the key paths say what is wrong


def save_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (what ``--resume`` and ``evaluate`` read back)."""
    return atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
