"""The long-running service: the scheduler, the run lock, `digest serve`."""
