"""The one entry point of every report: the CLI and the web API call these. Each returns a JSON-able dict
built from a few Redis reads, whatever the number of task records.

- `metrics_report(conn, settings, window="24h")`: refresh tasks by status, success rate, hospitals found,
  mean run time (from each run's start) and mean queue wait apart, the active tasks (jobs.observe.metrics);
- `health_report(conn, settings)`: status ok|warning|critical, the issues of the health rules, the 24 h
  metrics (jobs.observe.health);
- `performance_report(conn, settings)`: per task type over its last 200 runs (jobs.observe.performance);
- `alerts_list(conn, settings)`: firing and pending alerts, the channels' state, the outbox
  (jobs.observe.alert_state).
"""

from __future__ import annotations

from jobs.observe.alert_state import alerts_list
from jobs.observe.health import health_report
from jobs.observe.metrics import WINDOWS, metrics_report
from jobs.observe.performance import performance_report

__all__ = ["WINDOWS", "alerts_list", "health_report", "metrics_report", "performance_report"]
