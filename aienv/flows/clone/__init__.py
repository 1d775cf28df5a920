"""Cloning a peer's workspace: the job's record and state machine (``job``), where
jobs are kept (``jobs``), the download (``fetch``), the order of the steps
(``steps``) and the jobs' lifecycle in the node (``manager``)."""

from aienv.flows.clone.job import CloneJob, CloneState
from aienv.flows.clone.manager import CloneManager

__all__ = ["CloneJob", "CloneManager", "CloneState"]
