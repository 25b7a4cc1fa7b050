"""Moved to lab/netns.py (the lab ships in the wheel). Kept so tests written against the old path
still import; new code imports lab.netns."""

from lab.netns import *  # noqa: F403
