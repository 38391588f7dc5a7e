"""refreshq: crash-safe, resumable refresh jobs on RQ and Redis."""
