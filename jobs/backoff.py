"""The one backoff function: upstream requests, named tasks' retries and the retry sweeper all wait by it.

Exponential: `base * factor ** (attempt - 1)`, capped. Jitter scales the delay by a random factor in
[1 - jitter, 1], so jobs or threads that failed together do not come back together: 1 is "full jitter"
(anything up to the delay), 0 none (RQ's fixed retry intervals of a named task).
"""

from __future__ import annotations

import math
import random


def backoff(attempt: int, base: float, factor: float = 2.0, cap: float = math.inf, jitter: float = 0.0) -> float:
    """Seconds to wait before retry number `attempt` (1-based); never above `cap`."""
    if base <= 0:
        return 0.0
    try:
        nominal = min(cap, base * factor ** max(0, attempt - 1))
    except OverflowError:  # a factor far above 1 for many attempts: the cap is the answer
        nominal = cap
    return nominal * (1.0 - jitter * random.random()) if jitter else nominal
