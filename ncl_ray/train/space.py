"""A sweep's search space, `ncl-ray tune`'s `tune.space` file, read into a Tune `param_space` before Ray starts.

A YAML file maps config keys to a sampler:

    ncl.queue_size: {grid: [0, 256, 1024]}
    ncl.n_iters: {grid: [0, 3, 10]}
    model.init_temperature: {loguniform: [0.01, 0.1]}
    model.learn_temperature: {choice: [true, false]}
    variants:                      # a grid over whole settings, where a key matters only with another:
      - {ncl.n_iters: 0}           # plain training (no queue to size)
      - {ncl.n_iters: 3, ncl.queue_size: 64}
      - {ncl.n_iters: 3, ncl.queue_size: 512}

A variant is one grid value (its column in the table reads `ncl.n_iters=3 ncl.queue_size=64`), combined with
the other keys' grids like any other.

Every value a grid or choice can give, and both ends of a range, is checked like a loaded config first.
"""

from pathlib import Path
from typing import Any, Dict, List

import yaml
from omegaconf import OmegaConf

from ncl_ray.config.schema import ConfigError, finalize, from_dict, to_dict

SAMPLERS = ("grid", "choice", "uniform", "loguniform", "randint")
VARIANTS = "variants"  # a space file's grid over whole settings


def load_space(path: str, cfg) -> Dict[str, Any]:
    """Read a search-space file into a Tune `param_space` (flat config keys -> samplers)."""
    from ray import tune

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"tune.space: search-space file not found: {path}")
    raw = yaml.safe_load(p.read_text()) or {}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected a mapping of config keys to samplers")
    space = {}
    for key, spec in raw.items():
        if key == VARIANTS:
            space[key] = tune.grid_search(_variants(path, cfg, spec))
            continue
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__" or \
                isinstance(OmegaConf.select(cfg, key), (dict, list)) or OmegaConf.is_config(OmegaConf.select(cfg, key)):
            raise ConfigError(f"{path}: '{key}' is not a config key with a single value")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
            raise ConfigError(f"{path}: '{key}' needs exactly one of {', '.join(SAMPLERS)}, got {spec!r}")
        kind, arg = next(iter(spec.items()))
        _check_values(path, cfg, key, kind, arg)
        if kind == "grid":
            space[key] = tune.grid_search(list(arg))
        elif kind == "choice":
            space[key] = tune.choice(list(arg))
        else:
            space[key] = getattr(tune, kind)(*arg)
    return space


def _variants(path: str, cfg, spec) -> List[str]:
    """The `variants:` list as grid values `key=value key=value`, each checked like a loaded config."""
    if not isinstance(spec, list) or not spec or not all(isinstance(v, dict) and v for v in spec):
        raise ConfigError(f"{path}: '{VARIANTS}' needs a list of mappings of config keys to values, got {spec!r}")
    out = []
    for i, variant in enumerate(spec):
        text = " ".join(f"{k}={_flow(v)}" for k, v in variant.items())
        try:
            apply_params(to_dict(cfg), {VARIANTS: text})
        except ConfigError as e:
            raise ConfigError(f"{path}: {VARIANTS}[{i}] {text}: {e}") from None
        out.append(text)
    if len(set(out)) != len(out):
        raise ConfigError(f"{path}: '{VARIANTS}' lists the same settings twice")
    return out


def _flow(value) -> str:
    """A value as one YAML token without spaces: 3, 0.5, true, [none,ncl] (a string with spaces is refused)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip().removesuffix("...").strip()
    text = text.replace(", ", ",")
    if any(c.isspace() for c in text):
        raise ConfigError(f"variants: {value!r} holds spaces; variants take numbers, flags, names and lists")
    return text


def _check_values(path: str, cfg, key: str, kind: str, arg) -> None:
    """Every value a grid or choice can give, and both ends of a range, pass the schema's checks (types, ranges,
    choices) before Ray starts: a sweep does not fail at its fifth trial on a value the file allowed."""
    if kind in ("grid", "choice"):
        if not isinstance(arg, list) or not arg:
            raise ConfigError(f"{path}: '{key}' {kind} needs a non-empty list, got {arg!r}")
        values = arg
    else:
        if not isinstance(arg, list) or len(arg) != 2:
            raise ConfigError(f"{path}: '{key}' {kind} needs [low, high], got {arg!r}")
        values = [arg[0], arg[1] - 1] if kind == "randint" else arg
    for value in values:
        try:
            apply_params(to_dict(cfg), {key: value})
        except ConfigError as e:
            raise ConfigError(f"{path}: '{key}' = {value!r}: {e}") from None


def apply_params(base: Dict[str, Any], params: Dict[str, Any]):
    """The base config with sampled values, checked like a loaded config (types, ranges, choices)."""
    cfg = from_dict(base)
    flat: Dict[str, Any] = {}
    for key, value in params.items():  # a variant's `key=value ...` string, spread into its keys
        flat.update({k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in str(value).split())}
                    if key == VARIANTS else {key: value})
    for key, value in flat.items():
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            raise ConfigError(f"tune: '{key}' is not a config key")
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except Exception as e:
            raise ConfigError(f"tune: cannot set '{key}' = {value!r}: {e}") from None
    return finalize(cfg)


def count_trials(space: Dict[str, Any], num_samples: int) -> int:
    """Trials a sweep runs: every grid combination, `num_samples` times (Tune's rule)."""
    n = max(1, num_samples)
    for value in space.values():
        if isinstance(value, dict) and "grid_search" in value:
            n *= len(value["grid_search"])
    return n
