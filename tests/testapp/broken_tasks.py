"""A tasks module that fails at import time, as code with a bad deploy would."""

raise RuntimeError("broken_tasks cannot be imported")
