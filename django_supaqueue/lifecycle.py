"""The life-cycle signals' first home, kept importable: they live in ``django_supaqueue.signals``."""

from .signals import *  # noqa: F403
