"""Helpers of ``bench/run.py`` and ``bench/profile.py`` (not part of the authloyalty package)."""
