"""The end-of-run report: the test table with a legend, which checkpoint was tested and why, and plain-words
warnings (a plain ranking of an NCL-trained model near chance, a test split too small to mean much)."""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from ncl_ray.ncl.methods import BY_NAME


PUBLISHED = ("protocol: published (CLIP4Clip's): epoch selected on the test split, no held-out validation; "
             "these numbers are optimistic")


def legend(methods: Sequence[str], bank: str) -> List[str]:
    """Two lines under the table: what each method is, and what normalisation error measures."""
    bank_words = "training-query bank" if bank == "train" else f"{bank} queries (transductive)"
    words = [BY_NAME[m].title.format(bank=bank_words) + (" (uses the test queries: transductive)"
                                                          if BY_NAME[m].transductive else "")
             for m in methods if m in BY_NAME]
    return ["methods: " + "; ".join(words),
            "normalisation error: mean |P(v) - R/C| / (R/C) over test videos, P(v) = a video's summed retrieval "
            "probability over the R test captions (0 = every video retrieved equally often)",
            "cost s: seconds a method took on this gallery (its statistics, scoring and ranking, both directions); "
            "MdR, MnR: median and mean rank of the right item (1 = first)"]


def collapse_warning(metrics: Dict[str, float], n_iters: int, n_videos: int, prefix: str = "test/") -> Optional[str]:
    """Plain words when an NCL-trained model ranked without its normalisation is near chance in v2t."""
    plain = metrics.get(f"{prefix}none/v2t_R@1")
    if n_iters <= 0 or plain is None or n_videos <= 0:
        return None
    chance = 100.0 / n_videos
    if plain > 3 * chance:
        return None
    return (f"note: ranked without its normalisation (none), this NCL-trained model is near chance in v2t "
            f"(R@1 {plain:.2f}, chance {chance:.2f}): NCL training lets the per-caption biases absorb how "
            f"'popular' each caption is, so the raw scores are not comparable across captions; serve it with ncl")


@dataclass
class Tested:
    """What a report says about its test: the gallery, the settings, the checkpoint and why, the files."""
    split: str
    bank: str  # train, test or train+test
    n_iters: int  # NCL's Sinkhorn iterations in training
    queue: int
    n_videos: int
    tested: str  # the checkpoint
    why: str  # why that checkpoint
    decoded: int
    skipped: int
    results: str  # results.json or metrics.json
    run_dir: str  # what TensorBoard reads
    protocol: str = "held-out"
    n_captions: Optional[int] = None
    gallery_bank: str = "train"  # dbnorm's and dbsn's gallery bank: train | gallery


def report(name: str, metrics: Dict[str, float], methods: Sequence[str], t: Tested) -> str:
    """The one report `train` and `eval` print: the test gallery's size, the table, its legend, what was tested."""
    split, bank, n_iters, queue, n_videos, n_captions = t.split, t.bank, t.n_iters, t.queue, t.n_videos, t.n_captions
    tested, why, decoded, skipped, results, run_dir, protocol = (t.tested, t.why, t.decoded, t.skipped, t.results,
                                                                  t.run_dir, t.protocol)
    gallery = f"{n_videos} videos" + (f", {n_captions} captions" if n_captions else "")
    table = league_table(metrics, methods, bank, t.gallery_bank, "test/") if len(methods) > 7 else \
        format_results(metrics, list(methods), prefix="test/")
    lines = [f"== {name}: test split '{split}' ({gallery}), NCL n_iters={n_iters}, queue {queue} ==", table]
    if protocol == "published":
        lines.insert(1, PUBLISHED)
    lenient = ", ".join(f"{m} {metrics.get(f'test/{m}/v2t_lenient_R@1', float('nan')):.2f}" for m in methods)
    lines.append(f"v2t R@1 by CLIP4Clip's protocol (best caption per video): {lenient}")
    import textwrap

    for text in legend(methods, bank) + [collapse_warning(metrics, n_iters, n_videos) or ""]:
        if text:
            lines += textwrap.wrap(text, 112, subsequent_indent="  ")
    lines.append(f"tested: {tested} ({why})")
    lines.append(f"videos: {decoded} decoded, {skipped} skipped" + (f" (listed in {results})" if skipped else ""))
    lines.append(f"results: {results}")
    lines.append(f"TensorBoard: tensorboard --logdir {run_dir} --host 127.0.0.1   (or: make tensorboard)")
    return "\n".join(lines)


KEYS = ("R@1", "R@5", "R@10", "MdR", "MnR")
LEAGUE_KEYS = ("R@1", "R@5", "MdR")
TRANSDUCTIVE_MARK = "*: reads the test queries (transductive): a number a search service cannot reach"


def shown(method: str) -> str:
    """A method's name in a table: starred when it reads the test queries."""
    return method + "*" if method in BY_NAME and BY_NAME[method].transductive else method


def bank_words(method: str, bank: str, gallery_bank: str) -> str:
    """Where a method's statistics come from, in a few words."""
    m = BY_NAME[method]
    if not m.banks:
        return "test queries" if m.transductive else "-"
    words = {"train": "training queries", "test": "test queries", "train+test": "training + test queries"}[bank]
    if "gallery" in m.banks:
        words += " + " + ("training items" if gallery_bank == "train" else "the test gallery")
    return words


def league_table(metrics: Dict[str, float], methods: Sequence[str], bank: str, gallery_bank: str = "train",
                 prefix: str = "") -> str:
    """Every method side by side: t2v and v2t R@1, R@5, MdR, whether it reads the test queries, its banks, its
    cost (`ncl-ray eval eval.methods=[all]`)."""
    head = (f"{'method':8s} | " + " ".join(f"{'t2v ' + k:>8s}" for k in LEAGUE_KEYS) + " | "
            + " ".join(f"{'v2t ' + k:>8s}" for k in LEAGUE_KEYS) + " | test queries | cost s | statistics from")
    lines = [head, "-" * len(head)]
    for m in methods:
        t = [metrics.get(f"{prefix}{m}/t2v_{k}", float("nan")) for k in LEAGUE_KEYS]
        v = [metrics.get(f"{prefix}{m}/v2t_{k}", float("nan")) for k in LEAGUE_KEYS]
        reads = BY_NAME[m].transductive or (bool(BY_NAME[m].banks) and bank != "train")
        lines.append(f"{m:8s} | " + " ".join(f"{x:8.2f}" for x in t) + " | " + " ".join(f"{x:8.2f}" for x in v)
                     + f" | {'yes' if reads else 'no':12s} | {metrics.get(f'{prefix}{m}/time_s', float('nan')):6.3f}"
                     + f" | {bank_words(m, bank, gallery_bank)}")
    return "\n".join(lines)


def format_results(metrics: Dict[str, float], methods: Sequence[str], prefix: str = "") -> str:
    """A table: one row per method, t2v and v2t R@1/5/10, MdR, MnR, and what the method cost (its statistics,
    scoring and ranking, both directions) when measured."""
    timed = all(f"{prefix}{m}/time_s" in metrics for m in methods)
    head = f"{'method':8s} | " + " ".join(f"{'t2v ' + k:>9s}" for k in KEYS) + " | " + \
        " ".join(f"{'v2t ' + k:>9s}" for k in KEYS) + (" | cost s" if timed else "")
    lines = [head, "-" * len(head)]
    for m in methods:
        t = [metrics.get(f"{prefix}{m}/t2v_{k}", float("nan")) for k in KEYS]
        v = [metrics.get(f"{prefix}{m}/v2t_{k}", float("nan")) for k in KEYS]
        cost = f" | {metrics[f'{prefix}{m}/time_s']:6.3f}" if timed else ""
        lines.append(f"{shown(m):8s} | " + " ".join(f"{x:9.2f}" for x in t) + " | "
                     + " ".join(f"{x:9.2f}" for x in v) + cost)
    ne = metrics.get(f"{prefix}t2v_norm_error_before")
    if ne is not None:
        after = ", ".join(f"{m} {metrics.get(f'{prefix}{m}/t2v_norm_error', float('nan')):.3f}" for m in methods)
        lines.append(f"t2v normalisation error: before {ne:.3f}; after: {after}")
    if any(shown(m) != m for m in methods):
        lines.append(TRANSDUCTIVE_MARK)
    return "\n".join(lines)
