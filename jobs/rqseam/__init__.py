"""The seam between refreshq and RQ: every override of an RQ class's method and every private name of RQ
refreshq uses are in this package, and nowhere else (tests/processes/test_rq_seam.py checks both, and RQ's signatures
and private attributes the seam relies on).

RQ's classes are extended here with hooks named after what refreshq decides (`may_record_end`,
`command_handled`, `next_job`, ...), in refreshq's own signatures and with RQ's behaviour by default; refreshq's
workers, pool and queues (workers/, jobs.queues, jobs.named.schedules) implement hooks and call RQ's public
methods, never override RQ's. An RQ release that changes what this package relies on breaks
tests/processes/test_rq_seam.py, not production; one outside the tested range is refused when a process starts (gate).

- gate: the tested range of rq, checked when this package is first imported and when `refreshq` starts
- queue: RQ's Queue and Job (a hook on every push; always-JSON classes for rq-scheduler)
- worker: what both workers change in RQ's BaseWorker (the command channel apart: ChannelSeam); the accessors
  of RQ's private worker attributes
- forking: RQ's forking Worker (workers.RefreshqWorker)
- simple: RQ's SimpleWorker and the bookkeeping of a job it replays (workers.fast.FastWorker)
- recorded: that bookkeeping as a script's KEYS and ARGV (jobs/scripts/step.lua), every key it touches declared
- pool: RQ's WorkerPool (workers.pool.RefreshqPool)

Each module says what RQ 3 (its main branch) changes in it.
"""

from jobs.rqseam import gate

gate.check()
