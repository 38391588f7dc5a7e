"""Tests that start long-running processes: `refreshq worker`/`scheduler`/`web`, pools, servers of their own,
headless Chromium; the slowest group."""
