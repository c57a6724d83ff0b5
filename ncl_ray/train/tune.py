"""Ray Tune sweeps: `ncl-ray tune conf/tune_small.yaml [key=value ...]`.

The search space is a YAML file (`tune.space`, read by space.py). Each trial is a full Ray Train run (Train V2:
a function trainable that builds and fits a TorchTrainer, whose per-epoch reports reach Tune through
`TuneReportCallback`); ASHA stops weak trials on `tune.metric` (validation t2v R@1 by default). The decoded data
is shared by all trials. Results: a table sorted by the objective, `results.csv`, `best.yaml` (ready to run with
`ncl-ray train`), and every trial's TensorBoard logs under the sweep folder. Run the same command with
`train.resume=true run.name=<sweep>` to continue a crashed sweep.
"""

import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

from ncl_ray.config.schema import ConfigError, save_config, to_dict
from ncl_ray.runtime import storage
from ncl_ray.runtime.runs import publish, run_uri_of
from ncl_ray.train.space import apply_params, count_trials, load_space

__all__ = ["apply_params", "count_trials", "load_space", "run_sweep"]
log = logging.getLogger("ncl_ray.train.tune")


def _trial(params: Dict[str, Any], base: Dict[str, Any], datasets, meta: Dict[str, Any]) -> None:
    """One trial = one distributed Ray Train run, reporting to Tune every epoch."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from ncl_ray.train.fit import fit

    cfg = apply_params(base, params)
    cfg.run.name = f"train-{tune.get_context().get_trial_id()}"
    cfg.run.storage_path = meta["trials_dir"]  # a folder, or the sweep's URI + /trials
    run_uri = run_uri_of(cfg)
    run_dir = Path(tempfile.mkdtemp(prefix=f"ncl-ray-{cfg.run.name}-")) if run_uri else \
        Path(meta["trials_dir"]) / cfg.run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, str(run_dir / "config.yaml"))
    try:
        fit(cfg, datasets, {**meta, "run_dir": str(run_dir), "run_uri": run_uri}, callbacks=[TuneReportCallback()])
    finally:
        if run_uri:  # the trial's own files (config, TensorBoard, best/) mirrored to the bucket, scratch removed
            publish(run_dir, run_uri)
            shutil.rmtree(run_dir, ignore_errors=True)


def _trial_lines_class():
    from ray.tune import Callback

    class TrialLines(Callback):
        """One progress line over all the sweep's trials, and one line per finished trial (Tune's own status
        table is off). `total` counts every trial the sweep will run, not only those Tune has created yet."""

        def __init__(self, metric: str, total: int, mode: str = "max"):
            self.metric, self.total, self.done, self.best, self.pick = metric, total, 0, None, \
                (max if mode == "max" else min)
            self.bar = self._new_bar()  # from the sweep's start: its rate and ETA count the whole sweep

        def _new_bar(self):
            from ncl_ray.ui.console import Progress

            return Progress("trials", self.total, "trials")

        def __getstate__(self):  # Tune saves its callbacks with the experiment: the console stream stays here
            return {**self.__dict__, "bar": None}

        def on_trial_complete(self, iteration, trials, trial, **info):
            value = (trial.last_result or {}).get(self.metric)
            self.done += 1
            if isinstance(value, (int, float)):
                self.best = value if self.best is None else self.pick(self.best, value)
            log.info("trial %s finished (%d/%d): %s = %s, %s epochs", trial.trial_id, self.done, self.total,
                     self.metric, f"{value:.2f}" if isinstance(value, float) else value,
                     (trial.last_result or {}).get("training_iteration", "?"))
            self.bar = self.bar or self._new_bar()  # none when restored from a saved experiment
            self.bar.update(self.done, f"best {self.metric} {self.best:.2f}" if self.best is not None else "",
                            force=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            log.warning("trial %s failed: %s", trial.trial_id, str(trial.error_file or ""))

    return TrialLines


def _TrialLines(metric: str, total: int, mode: str = "max"):
    return _trial_lines_class()(metric, total, mode)


def results_table(df, params: List[str], metric: str, mode: str) -> Tuple[Any, str]:
    """(sorted DataFrame, printable table) of the trials' final results."""
    cols = {f"config/{p}": p for p in params}
    keep = ["trial_id"] + list(cols) + [metric, "best", "training_iteration"]
    table = df[[c for c in keep if c in df.columns]].rename(columns=cols)
    table = table.sort_values(metric, ascending=(mode == "min"), na_position="last").reset_index(drop=True)
    return table, table.to_string(index=False, float_format=lambda x: f"{x:.2f}")


def run_sweep(cfg) -> int:
    from ncl_ray.train.inputs import open_run

    t = cfg.tune
    cfg.train.eval_every_epochs = 1  # ASHA needs the metric in every report
    space = load_space(t.space, cfg)
    if not re.fullmatch(r"val/(none|ncl|served)/(t2v|v2t|v2t_lenient)_(R@1|R@5|R@10|MdR|MnR)", t.metric):
        raise ConfigError(f"tune.metric must be a validation metric such as val/served/t2v_R@1 or "
                          f"val/ncl/v2t_R@5 (see ncl_ray/evaluation/evaluate.py), got {t.metric!r}")
    # Tune's own TensorBoard copies off (each trial writes ours); its JSON and CSV results stay (passed below)
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # with verbose=0 the classic reporter prints nothing of its own
    sweep_dir, entries = open_run(cfg, "sweep_config.yaml", kind="sweep")
    uri = run_uri_of(cfg)  # object storage: sweep_dir is a scratch folder, mirrored there at the end and removed
    try:
        return _sweep(cfg, space, sweep_dir, uri, entries)
    finally:
        if uri:
            publish(sweep_dir, uri)
            shutil.rmtree(sweep_dir, ignore_errors=True)


def _sweep(cfg, space, sweep_dir: Path, uri: str, entries) -> int:
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler

    from ncl_ray.train.inputs import prepare_data

    t = cfg.tune
    home = uri or str(sweep_dir)  # where Tune and the trials keep their state
    datasets, meta, cache = prepare_data(cfg, sweep_dir, entries)
    meta["trials_dir"] = storage.join(home, "trials")
    trainable = tune.with_resources(
        tune.with_parameters(_trial, base=to_dict(cfg), datasets=datasets, meta=meta), {"CPU": 0.1})
    tuner_path = storage.join(home, "tuner")
    if cfg.train.resume and tune.Tuner.can_restore(tuner_path):
        log.info("resuming sweep %s", tuner_path)
        tuner = tune.Tuner.restore(tuner_path, trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=space)
    else:
        scheduler = ASHAScheduler(max_t=cfg.train.epochs, grace_period=t.grace_period,
                                  reduction_factor=t.reduction_factor)
        tuner = tune.Tuner(
            trainable, param_space=space,
            tune_config=tune.TuneConfig(metric=t.metric, mode=t.mode, scheduler=scheduler,
                                        num_samples=t.num_samples, max_concurrent_trials=t.max_concurrent),
            run_config=tune.RunConfig(name="tuner", storage_path=home, verbose=0,
                                      callbacks=[_TrialLines(t.metric, count_trials(space, t.num_samples), t.mode),
                                                 JsonLoggerCallback(), CSVLoggerCallback()]),
        )
    try:
        grid = tuner.fit()
    finally:
        os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
    unfinished = [tr.trial_id for tr in grid._experiment_analysis.trials
                  if tr.status not in ("TERMINATED", "ERROR")]
    if unfinished:  # Ctrl-C: Tune stops gracefully and returns; no best.yaml from an unfinished sweep
        print(f"\nsweep {cfg.run.name} interrupted: {len(unfinished)} trial(s) unfinished; no best.yaml written.\n"
              f"continue it with: ncl-ray tune <same config and overrides> run.name={cfg.run.name} "
              f"train.resume=true", file=sys.stderr)
        return 130
    df = grid.get_dataframe()
    best_over_time = grid.get_dataframe(filter_metric=t.metric, filter_mode=t.mode)
    df = df.merge(best_over_time[["trial_id", t.metric]].rename(columns={t.metric: "best"}), on="trial_id")
    table, text = results_table(df, list(space), t.metric, t.mode)
    table.to_csv(sweep_dir / "results.csv", index=False)
    errors = [r for r in grid if r.error]
    best = grid.get_best_result(metric=t.metric, mode=t.mode, scope="all")
    best_cfg = apply_params(to_dict(cfg), {k: best.config[k] for k in space})
    best_cfg.run.name = ""
    best_cfg.train.resume = False
    best_path = sweep_dir / "best.yaml"
    save_config(best_cfg, str(best_path))
    best_path.write_text(f"# ncl-ray train {best_path}   (best of sweep {cfg.run.name} on {t.metric})\n"
                         + best_path.read_text())
    print()
    print(f"== sweep {cfg.run.name}: {len(df)} trials, objective {t.metric} ({t.mode}), ASHA early stopping ==")
    print(text)
    if errors:
        print(f"{len(errors)} trial(s) failed: " + "; ".join(str(r.error).splitlines()[0] for r in errors))
    print(f"results: {home}/results.csv\nbest config: {home}/best.yaml\n"
          f"TensorBoard: tensorboard --logdir {home}")
    return 0 if not errors else 1
