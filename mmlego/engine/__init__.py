"""Runners, loops and hooks that mmlego registers (mmengine's engine seams).

This package is the location every mmlego registry imports on first use (``mmlego.registry._LOCATIONS``).
"""
