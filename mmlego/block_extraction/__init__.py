"""LegoDNN stage 1: find blocks in a model's tensor path automatically (no per-model block lists)."""
from .detection import BlockExtraction, BlockSpec, extract_blocks
from .graph import ModelGraph, is_conv, trace_model

__all__ = ['BlockExtraction', 'BlockSpec', 'ModelGraph', 'extract_blocks', 'is_conv', 'trace_model']
