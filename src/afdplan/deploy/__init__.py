"""What to launch: AFD bundles searched under a TPOT SLO, checked by simulation, with
launch files (issue 9; DESIGN.md §8)."""

from afdplan.deploy.result import DeployResult, search
from afdplan.deploy.search import Slo, Space, Target

__all__ = ["DeployResult", "Slo", "Space", "Target", "search"]
