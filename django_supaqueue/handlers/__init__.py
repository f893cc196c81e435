"""How a job is performed when it is not a Python task: HTTP calls."""
