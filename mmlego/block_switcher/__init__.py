"""LegoDNN online stage: swap only the changed blocks of a live model, thread-safely, keeping on the compute device
only what the model runs."""
from .offload import TeacherOffload
from .switcher import BlockSwitcher, ReadWriteLock

__all__ = ['BlockSwitcher', 'ReadWriteLock', 'TeacherOffload']
