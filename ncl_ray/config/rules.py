"""What a config may hold: the choice lists, the range rules and the refusal of interpolations. No OmegaConf.

config/schema.py applies these in `load_config` and `finalize`; each choice list is defined here once.
"""

from ncl_ray.ncl.methods import METHODS  # noqa: F401  (what eval.methods may list)


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file or key."""


CHOICES = {
    "data.dataset": ("synthetic", "manifest", "msrvtt", "msvd", "activitynet"),
    "data.cache_encoding": ("jpeg", "raw"),
    "data.synthetic_profile": ("uniform", "longtail"),
    "data.in_memory": ("auto", "true", "encoded", "false"),
    "train.protocol": ("held-out", "published"),
    "train.placement_strategy": ("PACK", "SPREAD", "STRICT_SPREAD", "STRICT_PACK"),
    "model.pooling": ("meanP", "seqTransf"),
    "model.activation": ("auto", "quickgelu", "gelu"),
    "optim.name": ("adamw", "bertadam"),
    "data.samples": ("videos", "pairs"),
    "data.sampler": ("uniform", "clip4clip"),
    "data.resize": ("area", "clip4clip"),
    "eval.bank": ("train", "test", "train+test"),
    "eval.bank_source": ("queue", "captions"),
    "tune.mode": ("min", "max"),
}
POSITIVE = ["data.num_frames", "data.frame_size", "data.max_words", "data.max_captions", "data.synthetic_videos",
            "train.batch_size", "train.num_workers", "train.epochs", "train.cpus_per_worker", "train.log_every_steps",
            "train.checkpoint_every_epochs", "train.keep_checkpoints", "train.startup_timeout_s", "optim.lr",
            "eval.memory_mb", "eval.bank_size", "eval.qbnorm_beta", "eval.qbnorm_k", "tune.num_samples",
            "tune.max_concurrent", "tune.grace_period", "data.jpeg_quality"]
NON_NEGATIVE = ["ncl.n_iters", "ncl.queue_size", "eval.n_iters", "data.decode_threads", "data.decode_concurrency",
                "optim.backbone_lr", "optim.weight_decay", "optim.grad_clip", "train.eval_every_epochs",
                "ncl.plain_loss_weight", "train.threads_per_worker", "eval.chunk_size",
                "eval.workers"]


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
