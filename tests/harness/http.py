"""Moved to lab/http.py (the lab ships in the wheel). Kept so tests written against the old path
still import; new code imports lab.http."""

from lab.http import *  # noqa: F403
