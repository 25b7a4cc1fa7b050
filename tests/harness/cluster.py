"""Moved to lab/cluster.py (the lab ships in the wheel). Kept so tests written against the old path
still import; new code imports lab.cluster."""

from lab.cluster import *  # noqa: F403
