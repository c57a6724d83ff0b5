"""Typed run configuration: dataclass defaults, then `conf/<exp>.yaml` diffs, then `key=value` overrides.

    cfg = load_config("conf/default.yaml", ["train.epochs=2", "ncl.n_iters=0"])

Unknown keys and wrong types raise `ConfigError` naming the key. `finalize()` computes derived values in one
place; `save_config()` writes the resolved YAML next to the run. Only `build_*` functions read the config:
classes below them take explicit keyword arguments.
"""

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from ncl_ray.config.explain import expected
from ncl_ray.config.rules import (CHOICES, METHODS, NON_NEGATIVE, POSITIVE, ConfigError, attributed, check_arch, expand,
                                   check_combinations, plain_overrides, refuse_interpolation)
from ncl_ray.config.eval_section import EvalConfig


@dataclass
class DataConfig:
    # synthetic | manifest | msrvtt | msvd | activitynet (README: "Data preparation")
    dataset: str = "synthetic"
    root: str = "data/synthetic"  # dataset folder; the built-in dataset is generated here when missing
    manifest: str = ""  # CSV/JSONL manifest (dataset=manifest); derived from root for the named datasets
    synthetic_videos: int = 400  # size of the built-in dataset when it has to be generated
    synthetic_profile: str = "uniform"  # uniform attributes | longtail (Zipf over combinations, generic captions)
    num_frames: int = 8  # frames sampled uniformly per clip (CLIP4Clip: 12)
    frame_size: int = 32  # square crop after shorter-side resize (CLIP: 224)
    max_words: int = 32  # tokenizer context length (CLIP4Clip: 32, ActivityNet 64)
    max_captions: int = 20  # captions kept per video
    # an epoch: videos = every video once with a random caption; pairs = every (video, caption) pair once, a new
    # global permutation per epoch (CLIP4Clip's --expand_msrvtt_sentences); frames stored once per video
    samples: str = "videos"
    # uniform = centres of num_frames equal slices; clip4clip = 1 frame per whole second, linspace, masked padding
    sampler: str = "uniform"
    resize: str = "area"  # area = FFmpeg's area filter; clip4clip = CLIP's PIL bicubic resize + CLIP4Clip's crop
    cache_dir: str = "data/cache"  # decoded-clip cache, keyed by manifest and decode settings
    cache_encoding: str = "jpeg"  # jpeg (about 10x smaller, decoded in Ray Data CPU tasks) | raw uint8 frames
    jpeg_quality: int = 90  # cache_encoding=jpeg
    decode_on: str = "auto"  # tasks (Ray Data CPU tasks) | worker (the trainer: nvJPEG on its GPU, else its CPU);
    # auto = worker for a JPEG cache with train.use_gpu (training batches; evaluation decodes in tasks)
    decode_threads: int = 1  # FFmpeg threads per decode call; 0 = FFmpeg's choice
    decode_concurrency: int = 0  # parallel decode tasks; 0 = all CPUs of the cluster
    # where epochs read the clips from: true = decoded frames in the object store; encoded = the cache's compact
    # bytes in the object store, decoded each epoch in Ray Data tasks; false = the Parquet cache streamed from disk;
    # auto = the first of those whose bytes fit in a third of the cluster's object store
    in_memory: str = "auto"
    streaming: bool = False  # no cache: decode the videos every epoch in Ray Data tasks (corpora too large to cache)
    jitter: bool = False  # streaming only: a random time inside each of the T slices (augmentation)
    train_split: str = "train"
    val_split: str = "val"  # model selection; falls back to test_split when the dataset has no val split
    test_split: str = "test"


@dataclass
class ModelConfig:
    arch: str = "tiny"  # "tiny" (built in code, random init) or any open_clip architecture, e.g. ViT-B-32
    pretrained: str = ""  # open_clip pretrained tag (e.g. openai) or a local checkpoint path; "" = random init
    pooling: str = "meanP"  # meanP | seqTransf (CLIP4Clip temporal pooling)
    embed_dim: int = 64  # tiny model only
    temporal_layers: int = 4  # seqTransf blocks, copied from CLIP's first text blocks (CLIP4Clip: 4)
    activation: str = "auto"  # auto = QuickGELU for OpenAI's weights (they were trained with it) | quickgelu | gelu
    init_temperature: float = 0.07  # tau at start; logit scale = 1/tau, clamped at 100 after every step
    learn_temperature: bool = True
    grad_checkpointing: bool = False
    clip_fp16: bool = False  # CLIP4Clip parity: backbone weights fp16, updated in place; turns train.amp off


@dataclass
class NCLConfig:
    n_iters: int = 3  # Sinkhorn iterations; 0 = plain contrastive (CLIP) loss
    queue_size: int = 256  # query-queue length per modality (Q)
    detach_biases: bool = True  # our default: biases are constants for the gradient
    gather_with_grad: bool = True  # all-gather keeps gradients to every worker's slice
    plain_loss_weight: float = 0.0  # adds w * plain contrastive loss (keeps raw scores comparable); 0 = NCL alone


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | bertadam (CLIP4Clip's: no bias correction, per-tensor clip, its groups)
    lr: float = 1e-3  # new layers (temporal pooling, projections)
    backbone_lr: float = 1e-3  # CLIP backbone (CLIP4Clip: 1e-7 when pretrained)
    weight_decay: float = 0.2
    warmup_ratio: float = 0.1  # linear warm-up, then cosine decay to 0
    grad_clip: float = 1.0  # 0 = off


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 16  # per worker (B); the loss sees N = W * B
    num_workers: int = 2  # Ray Train workers (W)
    use_gpu: bool = False
    cpus_per_worker: float = 0.5  # reserved for scheduling; fractional so that Ray Data keeps CPUs to decode with
    threads_per_worker: int = 0  # torch threads per worker; 0 = auto (train/threads.py: the node's cores on CPU)
    placement_strategy: str = "PACK"  # PACK (fill nodes) | SPREAD | STRICT_SPREAD (one worker per node)
    amp: bool = True  # bf16/fp16 autocast, GPU only
    compile: str = "auto"  # torch.compile both towers: auto = on GPUs | true | false | graphs (+ CUDA graphs)
    seed: int = 0
    log_every_steps: int = 5
    eval_every_epochs: int = 4  # 0 = only at the end
    checkpoint_every_epochs: int = 1
    keep_checkpoints: int = 2
    keep_best: bool = True  # keep the best validation epoch's model (runs/<name>/best) and test it at the end
    protocol: str = "held-out"  # or published: train on all training videos, select on test (labelled)
    select_metric: str = ""  # "" = val/<served>/t2v_R@1: ncl for NCL training (n_iters > 0), none otherwise
    max_failures: int = 1  # worker failures Ray Train recovers from (restart from the latest checkpoint); -1 = any
    startup_timeout_s: float = 120.0  # give up when the workers cannot be placed (resources) within this time
    resume: bool = False  # continue the run named run.name from its latest checkpoint
    resume_force: bool = False  # resume even when the model or data settings differ from the stored run
    resume_from: str = ""  # or start from this checkpoint directory (weights, optimizer, queue, step)
    fail_at_step: int = -1  # fault injection: rank 0 dies once at this global step (tests)


@dataclass
class TuneConfig:
    space: str = "conf/tune/small.yaml"  # search space file
    num_samples: int = 1  # repeats of the grid / random draws
    # val/{served,none,ncl}/{t2v,v2t,v2t_lenient}_{R@1,R@5,R@10,MdR,MnR}; served = the ranking each trial is
    # served with (ncl for NCL-trained models, none for plain ones), so the sweep does not favour either
    metric: str = "val/served/t2v_R@1"
    mode: str = "max"
    max_concurrent: int = 1
    grace_period: int = 1  # ASHA: epochs before a trial can be stopped
    reduction_factor: int = 2


@dataclass
class RunConfig:
    name: str = ""  # "" = ncl-<date>-<time>; letters, digits, '.', '_', '-' (no path separators)
    storage_path: str = "runs"  # local folder or shared/cloud URI (s3://, gs://)
    ray_address: str = ""  # Ray cluster to join; "" = $RAY_ADDRESS if set, else a private local instance
    verbose: bool = False  # forward every worker's output and Ray's INFO logs to the console (debugging)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ncl: NCLConfig = field(default_factory=NCLConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    run: RunConfig = field(default_factory=RunConfig)


def _merge(base: DictConfig, other, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as e:  # one line naming the key, never OmegaConf's internals
        key = getattr(e, "full_key", None) or "?"
        msg = str(getattr(e, "msg", e)).splitlines()[0]
        if isinstance(e, ConfigKeyError):
            raise ConfigError(f"{source}: unknown key '{key}' (ncl-ray config show lists every key)") from None
        got = re.search(r"Value '(.*?)'", msg)
        raise ConfigError(f"{source}: '{key}' expects {expected(Config, key) or 'another type'}"
                          + (f"; got {got.group(1)!r}" if got else "")) from None


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Defaults <- YAML file <- dotlist overrides; struct mode, so unknown keys fail.

    Args:
        path: a YAML file holding only differences from the defaults, or None.
        overrides: `key=value` strings, e.g. `["train.epochs=2"]`.
    """
    cfg = OmegaConf.structured(Config)
    OmegaConf.set_struct(cfg, True)
    if path:
        if not Path(path).is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            file_cfg = OmegaConf.load(path)
        except Exception as e:  # yaml syntax errors
            raise ConfigError(f"{path}: cannot parse YAML: {e}") from None
        if not isinstance(file_cfg, DictConfig):
            raise ConfigError(f"{path}: expected a mapping of sections (data:, model:, ...), got a list")
        refuse_interpolation(OmegaConf.to_container(file_cfg, resolve=False), path)
        for key, value in file_cfg.items():
            if key in cfg and OmegaConf.is_dict(cfg[key]) and not OmegaConf.is_dict(value):
                raise ConfigError(f"{path}: '{key}' must be a section of keys (e.g. {key}.{next(iter(cfg[key]))}: "
                                  f"...), got {value!r}")
        cfg = _merge(cfg, file_cfg, path)
    overrides = plain_overrides(overrides)
    if overrides:
        for item in overrides:
            key = item.split("=", 1)[0].strip()
            if key in cfg and OmegaConf.is_dict(cfg[key]):
                raise ConfigError(f"command line: '{key}' is a section; set one of its keys, e.g. "
                                  f"{key}.{next(iter(cfg[key]))}=...")
        for item in overrides:  # one at a time, so a YAML error in a value (a list holding ${...}) names it
            try:
                OmegaConf.from_dotlist([item])
            except Exception as e:
                raise ConfigError(f"command line: cannot parse {item[:120]!r} ({str(e).splitlines()[0][:120]})") \
                    from None
        dotlist = OmegaConf.from_dotlist(list(overrides))
        refuse_interpolation(OmegaConf.to_container(dotlist, resolve=False), "command line")
        cfg = _merge(cfg, dotlist, "command line")
    try:
        return finalize(cfg)
    except ConfigError as e:
        raise attributed(e, path, overrides) from None


def finalize(cfg: DictConfig) -> DictConfig:
    """Validate choices and compute derived values (run name, absolute storage path)."""
    cfg.data.in_memory = str(cfg.data.in_memory).lower()  # YAML's true/false arrive as 'True'/'False'
    for key, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            raise ConfigError(f"invalid value for '{key}': {value!r} (choose from {', '.join(choices)})")
    cfg.eval.methods = list(expand(cfg.eval.methods))
    for m in cfg.eval.methods:
        if m not in METHODS:
            raise ConfigError(f"invalid value in 'eval.methods': {m!r} (choose from {', '.join(METHODS)})")
    for key in POSITIVE:
        if OmegaConf.select(cfg, key) <= 0:
            raise ConfigError(f"'{key}' must be positive, got {OmegaConf.select(cfg, key)}")
    for key in NON_NEGATIVE:
        if OmegaConf.select(cfg, key) < 0:
            raise ConfigError(f"'{key}' must be >= 0, got {OmegaConf.select(cfg, key)}")
    if not 0 < cfg.model.init_temperature <= 1:
        raise ConfigError(f"'model.init_temperature' must be in (0, 1], got {cfg.model.init_temperature}")
    if cfg.model.pooling == "seqTransf" and cfg.model.temporal_layers < 1:
        raise ConfigError(f"'model.temporal_layers' must be >= 1 for seqTransf, got {cfg.model.temporal_layers}")
    check_arch(cfg.model.arch)
    check_combinations(cfg)  # keys that must agree with each other (rules.py)
    if cfg.train.protocol == "published":  # select on the test split, as the published tables did
        cfg.data.val_split = cfg.data.test_split
    pattern = r"val/(none|ncl|served)/(t2v|v2t|v2t_lenient)_(R@1|R@5|R@10|MdR|MnR)"
    if cfg.train.select_metric and not re.fullmatch(pattern, cfg.train.select_metric):
        raise ConfigError(f"'train.select_metric' must look like val/ncl/t2v_R@1, got {cfg.train.select_metric!r}")
    if cfg.run.name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", cfg.run.name):
        raise ConfigError(f"'run.name' must be letters, digits, '.', '_' or '-' (no path separators), "
                          f"got {cfg.run.name!r}")
    if not cfg.run.name:
        # resume needs a name: a fresh run gets one from the clock
        if cfg.train.resume:
            raise ConfigError("'train.resume=true' needs 'run.name' of the run to continue")
        cfg.run.name = time.strftime("ncl-%Y%m%d-%H%M%S")
    if cfg.run.storage_path.startswith("file://"):
        cfg.run.storage_path = cfg.run.storage_path[len("file://"):]
    if "://" not in cfg.run.storage_path:
        cfg.run.storage_path = os.path.abspath(cfg.run.storage_path)  # Ray wants absolute paths
    return cfg


def served_method(cfg: DictConfig) -> str:
    """The ranking a model is served with: NCL-trained models with their normalisation, plain ones without."""
    return "ncl" if cfg.ncl.n_iters > 0 else "none"


def select_metric(cfg: DictConfig) -> str:
    return (cfg.train.select_metric or "val/served/t2v_R@1").replace("/served/", f"/{served_method(cfg)}/")


def to_dict(cfg: DictConfig) -> dict:
    """Plain resolved dict: what Ray ships to workers and what checkpoints store."""
    return OmegaConf.to_container(cfg, resolve=True)


def from_dict(d: dict) -> DictConfig:
    """Inverse of `to_dict`, re-validated against the schema."""
    refuse_interpolation(d, "stored config")
    cfg = _merge(OmegaConf.structured(Config), d, "stored config")
    OmegaConf.set_struct(cfg, True)
    return cfg


def save_config(cfg: DictConfig, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(OmegaConf.to_yaml(cfg, resolve=True))
