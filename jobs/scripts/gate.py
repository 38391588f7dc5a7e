"""The constants of the upstream gate's Lua (upstream_hold.lua, upstream_pace_take.lua, upstream_pace_report.lua;
jobs.limits: in-flight slots; jobs.pacing: requests per second), given to the scripts by jobs.scripts' loader
(`-- include: gate_constants`): one place for each number, read by Python and Lua alike."""

from __future__ import annotations

# How the learned rate moves (REFRESHQ_UPSTREAM_RPS=auto; jobs.pacing explains the design). After a throttling
# answer the rate drops to BACK_OFF of what was being sent (the *ceiling*); below NEAR of the ceiling it grows
# back by FAST per second, then creeps up by SLOW per second (a limit found is approached slowly: every
# throttling answer costs a pause), and once ABOVE the ceiling with nothing refused, by FAST_ABOVE per second
# (the limit was raised: found again within seconds). The first ceiling, the rate sent when nothing paced it
# yet, is a rough count (bursts of requests in flight): from it the rate drops to FIRST_BACK_OFF and grows by
# PROBE per second, until the next throttling answer gives a ceiling measured while paced. It grows only
# while requests wait for it, and never drops below MIN_RATE.
BACK_OFF = 0.85
FIRST_BACK_OFF = 0.7
NEAR = 0.95
FAST = 0.5
SLOW = 0.003
PROBE = 0.25
ABOVE = 1.1
FAST_ABOVE = 0.25
MIN_STEP = 0.01  # requests per second per second: the slowest creep, for rates of a few a minute
MIN_RATE = 0.1
# With nothing learned yet (auto), a holder sends freely for this long before it asks again: a pause
# recorded meanwhile reaches it within about that long.
FREE_SECONDS = 0.1
# An answer told of later than this after it arrived (its work-horse was paused) backs nothing off.
REPORT_MAX_AGE = 2.0
MAX_RATE = 1_000_000.0

# What the loader prepends to the pacing scripts, as `local NAME = value`.
LUA_CONSTANTS: dict[str, float | str] = {
    "BACK_OFF": BACK_OFF, "FIRST_BACK_OFF": FIRST_BACK_OFF, "NEAR": NEAR, "FAST": FAST, "SLOW": SLOW, "PROBE": PROBE,
    "ABOVE": ABOVE, "FAST_ABOVE": FAST_ABOVE, "MIN_STEP": MIN_STEP, "MIN_RATE": MIN_RATE, "FREE_SECONDS": FREE_SECONDS,
    "REPORT_MAX_AGE": REPORT_MAX_AGE, "MAX_RATE": MAX_RATE,
}
