"""What a config may hold: the choice lists, the range rules and the refusal of interpolations. No OmegaConf.

config/schema.py applies these in `load_config` and `finalize`; each choice list is defined here once.
"""

from ncl_ray.ncl.methods import METHODS, SETTINGS, expand, owner  # noqa: F401  (what eval.methods may list)


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file or key."""


def plain_overrides(overrides) -> list:
    """`key=value` strings, each checked for its `=`; `key=` is the empty string (`key=''`)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
    return [f"{item}''" if item.endswith("=") else item for item in overrides]


def attributed(e: ConfigError, path, overrides) -> ConfigError:
    """`e` prefixed with where the key it names was set: the command line, else the config file."""
    import re

    named = re.search(r"'([a-z_]+\.[a-z_]+)'", str(e))
    if not named or str(e).startswith(("command line:", f"{path}:")):
        return e
    where = "command line" if named.group(1) in {i.split("=", 1)[0].strip() for i in overrides} else path or ""
    return ConfigError(f"{where}: {e}") if where else e


def open_clip_archs() -> list:
    """The architectures open_clip can build, read from its model-config folder (without importing it)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(list(spec.submodule_search_locations)[0]) / "model_configs"
    return sorted(p.stem for p in folder.glob("*.json"))


def check_arch(arch: str) -> None:
    """`model.arch` is tiny, an open_clip architecture or an hf-hub: name; else one line with the nearest names."""
    if arch == "tiny" or arch.startswith("hf-hub:"):
        return
    known = open_clip_archs()
    if known and arch not in known:
        import difflib

        near = difflib.get_close_matches(arch, known, n=3, cutoff=0.5)
        raise ConfigError(f"'model.arch': unknown architecture {arch!r} (tiny, or one of open_clip's {len(known)}"
                          f"{', e.g. ' + ', '.join(near) if near else ' such as ViT-B-32, ViT-B-16'})")


CHOICES = {
    "data.dataset": ("synthetic", "manifest", "msrvtt", "msvd", "activitynet"),
    "data.cache_encoding": ("jpeg", "raw"),
    "data.decode_on": ("auto", "tasks", "worker"),
    "data.synthetic_profile": ("uniform", "longtail"),
    "data.in_memory": ("auto", "true", "encoded", "false"),
    "train.protocol": ("held-out", "published"),
    "train.compile": ("auto", "true", "false", "graphs"),
    "train.placement_strategy": ("PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"),
    "model.pooling": ("meanP", "seqTransf"),
    "model.activation": ("auto", "quickgelu", "gelu"),
    "optim.name": ("adamw", "bertadam"),
    "data.samples": ("videos", "pairs"),
    "data.sampler": ("uniform", "clip4clip"),
    "data.resize": ("area", "clip4clip"),
    "eval.bank": ("train", "test", "train+test"),
    "eval.gallery_bank": ("train", "gallery"),
    "eval.bank_source": ("queue", "captions", "file"),
    "tune.mode": ("min", "max"),
    **{f"eval.{s.key}": s.choices for s in SETTINGS if s.choices},
}
POSITIVE = ["data.num_frames", "data.frame_size", "data.max_words", "data.max_captions", "data.synthetic_videos",
            "train.batch_size", "train.num_workers", "train.epochs", "train.cpus_per_worker", "train.log_every_steps",
            "train.checkpoint_every_epochs", "train.keep_checkpoints", "train.startup_timeout_s", "optim.lr",
            "eval.memory_mb", "eval.bank_size", "tune.num_samples", "tune.max_concurrent", "tune.grace_period",
            "data.jpeg_quality", *(f"eval.{s.key}" for s in SETTINGS if s.bound == "positive")]
NON_NEGATIVE = ["ncl.n_iters", "ncl.queue_size", "data.decode_threads", "data.decode_concurrency",
                "optim.backbone_lr", "optim.weight_decay", "optim.grad_clip", "train.eval_every_epochs",
                "ncl.plain_loss_weight", "train.threads_per_worker", "eval.chunk_size", "eval.workers",
                *(f"eval.{s.key}" for s in SETTINGS if s.bound == "non_negative")]


def refuse_interpolation(node, source: str, prefix: str = "") -> None:
    """`${...}` would be resolved by OmegaConf on access (`${oc.env:SECRET}` copies environment variables into
    outputs; crafted nests hang the resolver): a config here holds plain values only."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, (dict, list)):
            refuse_interpolation(value, source, name + ".")
        elif isinstance(value, str) and "${" in value:
            raise ConfigError(f"{source}: '{name}' holds an interpolation ({value[:60]!r}); configs take plain "
                              f"values only")


def decode_site(cfg) -> str:
    """Where training clips are decoded: `data.decode_on`, with auto = the worker when it trains on a GPU from
    a JPEG clip cache (nvJPEG there; whole videos or pairs), else on the CPU (Ray Data's tasks, or for pairs the
    worker's feeder thread)."""
    d = cfg.data
    if d.decode_on != "auto":
        return d.decode_on
    fits = d.cache_encoding == "jpeg" and not d.streaming  # whole videos or pairs
    return "worker" if (cfg.train.use_gpu and fits) else "tasks"


def check_combinations(cfg) -> None:
    """ConfigError naming the keys when settings contradict each other (cfg: the merged config)."""
    if cfg.data.dataset == "manifest" and not cfg.data.manifest:
        raise ConfigError("'data.manifest' is required with data.dataset=manifest: a CSV or JSONL file, e.g. "
                          "data.manifest=my_videos.csv (README: \"Data preparation\")")
    if cfg.eval.bank_source == "file" and not cfg.eval.bank_file:
        raise ConfigError("'eval.bank_source' is file: it needs eval.bank_file=FILE, a text file of queries, one "
                          "per line")
    rows = cfg.ncl.queue_size if cfg.eval.bank_source == "queue" else cfg.eval.bank_size
    for key in (s.key for s in SETTINGS if s.at_most_bank):
        k, method = cfg.eval[key], owner(key).name
        if method in cfg.eval.methods and cfg.eval.bank != "test" and k > rows:
            raise ConfigError(f"'eval.{key}={k}' exceeds the {rows} queries of the bank "
                              f"({'ncl.queue_size' if cfg.eval.bank_source == 'queue' else 'eval.bank_size'}); "
                              f"lower it")
    if cfg.data.jitter and cfg.data.sampler != "uniform":
        raise ConfigError("'data.jitter=true' draws times inside uniform slices; it needs data.sampler=uniform")
    if cfg.data.samples == "pairs" and cfg.data.streaming:
        raise ConfigError("'data.samples=pairs' reads clips from the clip cache; it cannot be combined with "
                          "'data.streaming=true' (use data.samples=videos to decode every epoch)")
    if cfg.data.decode_on == "worker":
        clash = ("data.cache_encoding=raw" if cfg.data.cache_encoding != "jpeg" else
                 "data.streaming=true" if cfg.data.streaming else "")
        if clash:
            raise ConfigError(f"'data.decode_on=worker' decodes the clip cache's JPEG frames in the trainer; it "
                              f"cannot be combined with '{clash}'")
    if cfg.optim.name == "bertadam" and not 0 <= cfg.optim.warmup_ratio < 1:
        raise ConfigError(f"'optim.warmup_ratio' must be in [0, 1) for bertadam, got {cfg.optim.warmup_ratio}")
    if not 0 <= cfg.optim.warmup_ratio <= 1:
        raise ConfigError(f"'optim.warmup_ratio' must be in [0, 1], got {cfg.optim.warmup_ratio}")
    if cfg.train.max_failures < -1:
        raise ConfigError(f"'train.max_failures' must be >= -1 (-1 = retry forever), got {cfg.train.max_failures}")
    if cfg.tune.reduction_factor < 2:
        raise ConfigError(f"'tune.reduction_factor' must be >= 2, got {cfg.tune.reduction_factor}")
