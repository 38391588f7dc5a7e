"""The refresh engine: refreshes (a record each) and the RQ jobs that run them, province by province."""
