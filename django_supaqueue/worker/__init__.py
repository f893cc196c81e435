"""The worker runtime: processes, the claim loop, the listener and the executor.

It never builds SQL: every statement it runs comes from ``django_supaqueue.queue``.
"""
