"""The upstream gate moved into the core (jobs.limits); kept here for code that imports it from workers."""

from __future__ import annotations

from jobs.limits import LEASE_SECONDS, UpstreamGate, gate_for, holder_id, release_holder

__all__ = ["LEASE_SECONDS", "UpstreamGate", "gate_for", "holder_id", "release_holder"]
