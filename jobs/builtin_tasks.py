"""The old name of the built-in named tasks' module (`jobs.named.builtin`), the previous default of
REFRESHQ_TASK_MODULES: a deployment that still lists it loads the same tasks (jobs.named.catalog)."""

import jobs.named.builtin  # noqa: F401 - importing it registers the tasks
