"""LegoDNN online stage: swap only the changed blocks of a live model, from memory, thread-safely."""
from .switcher import BlockSwitcher, ReadWriteLock

__all__ = ['BlockSwitcher', 'ReadWriteLock']
