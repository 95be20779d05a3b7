"""Running a plan: the store of heads and log, the lease lock, the runner."""
