"""mmengine-side glue: the LegoDNN pipeline loop and the online scaling hook (registered in mmlego's registries)."""
from .pipeline_loop import LegoDNNPipelineLoop
from .task_metrics import DEFAULT_METRICS, evaluate_model, pick_metric

__all__ = ['DEFAULT_METRICS', 'LegoDNNPipelineLoop', 'evaluate_model', 'pick_metric']
