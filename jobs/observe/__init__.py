"""Observability: every figure computed from what Redis holds, so no restart, failover or SIGKILL loses one.

- counters: monotonic counters and run-time histograms, incremented where the events happen
- outcomes: what ending a named-task run records; the per-kind lists of ended runs and refreshes; the
  latest outcome per subject
- snapshot: the system as it is now (queues, workers, registries, scheduler, memory, running refreshes)
- report: the metrics report, and the one place the web API and the CLI call for every report
- health: the health rules; performance: per task type over the last runs
- alert_rules, alert_state: what should alert, and Alertmanager-like state (for, repeat, resolved)
- channels, delivery: the webhook and email channels, and the outbox they are delivered from
- run_ended: what ending a refresh run records, as keys and numbers given to the scripts

Refreshes that end are recorded by transition.lua and start.lua (jobs/scripts) in the same script as the
status change; nothing here reads task records one by one.
"""
