"""Run the `curator` CLI, dying hard (os._exit, no cleanup) right after the step named by CRASH_AFTER_STEP is
recorded: a crash at the worst moment for resume. Test-only: the shipped step runner has no failure hook."""
import os
import sys

from pipelines.steps import StepRunner

_step = StepRunner.step


def _step_then_crash(self, name, fn, round=None):
    out = _step(self, name, fn, round=round)
    if name == os.environ.get("CRASH_AFTER_STEP"):
        print(f"crashing after step {name}", file=sys.stderr, flush=True)
        os._exit(137)
    return out


StepRunner.step = _step_then_crash

if __name__ == "__main__":
    from curator.cli import main

    sys.argv[0] = "curator"
    main()
