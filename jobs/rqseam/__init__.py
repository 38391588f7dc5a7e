"""The seam between refreshq and RQ.

- gate: the tested range of rq, checked when this package is first imported and when `refreshq` starts
"""

from jobs.rqseam import gate

gate.check()
