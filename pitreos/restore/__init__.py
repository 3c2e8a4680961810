"""Restore, in place: plan what differs (:mod:`.plan`, read-only), then fetch only that
(:mod:`.execute`)."""

from .execute import RestoreStats, execute_restore
from .plan import FilePlan, RestoreOptions, RestorePlan, plan_restore

__all__ = ["FilePlan", "RestoreOptions", "RestorePlan", "RestoreStats", "execute_restore",
           "plan_restore"]
