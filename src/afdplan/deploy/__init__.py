"""What to launch: AFD bundles searched under a TPOT SLO, checked by simulation, with
launch files (DESIGN.md §8)."""

from afdplan.deploy.result import DeployResult, search
from afdplan.deploy.slo_search import MoeAssumptions, Slo, Space, Target

__all__ = ["DeployResult", "MoeAssumptions", "Slo", "Space", "Target", "search"]
