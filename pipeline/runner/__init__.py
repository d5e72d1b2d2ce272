"""Running a recipe.

The run directory and cache (rundir.py), the stage loop and exports (runner.py), the measurements on each
runtime (evaluation.py) and the report's content (assemble.py).
"""

from edgeship.runner.rundir import prepare_run_dir
from edgeship.runner.runner import ALL_PHASES, Runner, RunOutcome

__all__ = ["ALL_PHASES", "RunOutcome", "Runner", "prepare_run_dir"]
