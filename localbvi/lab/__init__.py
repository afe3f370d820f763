"""The base-vs-instruct lab: side-by-side compare, prompt X-ray, experiments, branching.

Domain code only (never Textual): the CLI (`localbvi compare`, `localbvi experiments`) and
the TUI's compare, X-ray and token-probability screens call these functions.
"""

from localbvi.lab.compare import (
    CompareResult,
    CompareRun,
    GenToken,
    LabError,
    Plan,
    Prepared,
    SideRequest,
    SideRun,
    branch,
    branch_ids,
    plan,
    prepare,
    run_compare,
    run_side,
    side_stats,
    stop_reason,
)
from localbvi.lab.experiments import Experiment, ExperimentError, Experiments, load_experiments

__all__ = [
    "CompareResult",
    "CompareRun",
    "Experiment",
    "ExperimentError",
    "Experiments",
    "GenToken",
    "LabError",
    "Plan",
    "Prepared",
    "SideRequest",
    "SideRun",
    "branch",
    "branch_ids",
    "load_experiments",
    "plan",
    "prepare",
    "run_compare",
    "run_side",
    "side_stats",
    "stop_reason",
]
