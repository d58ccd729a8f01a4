"""Resumable step runner: each step of a loop is a recorded run; a rerun skips steps already finished.

A pipeline is identified by a hash of its config (so changing the recipe starts a new pipeline, while the
same command after a crash or Ctrl-C continues). A finished step is a `runs` row with kind='step',
status='ok' and config {"pipeline": id, "step": name}; its outputs (checkpoint path, build id, metrics) are
kept in the row's counts JSON so later steps can find them without redoing the work. Steps whose inner
work is itself keyed (recaption, filter) may be re-entered after a crash mid-step: their writes skip rows that
already landed, so a crash never produces duplicates.
"""
from __future__ import annotations

import json
import time
from typing import Callable

from curator.schema import config_hash

class StepRunner:
    def __init__(self, store, pipeline: str, config: dict, log: Callable[[str], None] = print):
        self.store = store
        self.pipeline_id = f"{pipeline}-{config_hash(config)}"
        self.config = config
        self.log = log
        self.done = self._finished_steps()
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def _finished_steps(self) -> dict[str, dict]:
        rows = self.store.sql(
            "SELECT config, counts FROM runs WHERE kind = 'step' AND status = 'ok' ORDER BY finished_at"
        ).to_pylist()
        done = {}
        for r in rows:
            cfg = json.loads(r["config"] or "{}")
            if cfg.get("pipeline") == self.pipeline_id:
                done[cfg["step"]] = json.loads(r["counts"] or "{}")
        return done

    def step(self, name: str, fn: Callable[[], dict], round: int | None = None) -> dict:
        """Run `fn` unless `name` already finished in this pipeline; return its outputs either way."""
        if name in self.done:
            self.skipped.append(name)
            self.log(f"[skip] {name} (done in an earlier run)")
            return self.done[name]
        self.log(f"[step] {name} …")
        t0 = time.time()
        run_id = self.store.start_run("step", round=round, config={"pipeline": self.pipeline_id, "step": name,
                                                                    "recipe": self.config})
        try:
            out = fn() or {}
        except BaseException as e:  # record the failure (Ctrl-C included), then let it propagate
            self.store.finish_run(run_id, status="failed", error=f"{type(e).__name__}: {e}"[:2000])
            raise
        out = dict(out, seconds=round_(time.time() - t0))
        self.store.finish_run(run_id, status="ok", counts=out)
        self.done[name] = out
        self.ran.append(name)
        self.log(f"[done] {name} in {out['seconds']} s")
        return out


def tag_state(store, pipeline_id: str, name: str, short: bool = True, retag: bool = False,
              log: Callable[[str], None] = print) -> dict:
    """Tag the store's current state as `<pipeline id>/<name>` (this pipeline's own history) and, when `short`,
    also as plain `name` (e.g. round-2) if that tag is free, still names this pipeline's previous attempt at
    the same step, or `retag` asks to move it. A tag naming another state is never moved silently: it stays,
    and the log says which tag holds this run's state. Every tag set or moved is a `runs` row (Store.tag)."""
    own = f"{pipeline_id}/{name}"
    before = store.tag_versions()
    names = [own]
    if short:
        if name not in before or retag or before.get(name) == before.get(own):
            names.append(name)
        else:
            log(f"note: tag {name} already names another state of this store (another pipeline or run); "
                f"this run's state is tagged {own} (pass --retag to move {name} here)")
    versions = store.tag(names, replace=True)
    return {"tag": own, "short": name if name in names else None, "versions": versions}


def round_(x: float) -> float:
    return float(f"{x:.1f}")
