"""The config's `eval` section: the evaluation's own keys, then every test-time method's settings, made from
their records in ncl/methods.py (so a new method's keys need no edit here). No Ray, no OmegaConf."""

from dataclasses import dataclass, field, make_dataclass
from typing import List

from ncl_ray.ncl.methods import DEFAULT_METHODS, SETTINGS


@dataclass
class EvalBase:
    methods: List[str] = field(default_factory=lambda: list(DEFAULT_METHODS))  # ncl/methods.py; all = every one
    bank: str = "train"  # train | test | train+test: queries the test-time biases are computed from
    gallery_bank: str = "train"  # dbnorm, dbsn: train (the other modality's bank) | gallery (the test gallery)
    bank_source: str = "queue"  # queue (saved with the checkpoint) | captions (training split, embedded now) | file
    bank_size: int = 5000  # training videos whose captions form the bank (captions); queries read (file)
    bank_file: str = ""  # bank_source=file: your own queries, one per line (the text-to-video bank)
    out_dir: str = ""  # `ncl-ray eval` output; "" = CHECKPOINT/eval
    chunk_size: int = 0  # queries per similarity block; 0 = derived from memory_mb and the gallery size
    memory_mb: int = 2048  # byte budget of the similarity blocks in flight (1M-video galleries fit any machine)
    workers: int = 0  # threads for the bank's Sinkhorn blocks; 0 = the cores torch's kernels leave idle (<= 4)


# the methods' own settings (eval.n_iters, eval.nnn_k, ...) come from their records in ncl/methods.py
EvalConfig = make_dataclass("EvalConfig", [(s.key, type(s.default), field(default=s.default)) for s in SETTINGS],
                            bases=(EvalBase,))
