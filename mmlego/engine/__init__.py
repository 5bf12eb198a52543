"""mmengine-side glue: the LegoDNN pipeline loop and the online scaling hook (registered in mmlego's registries)."""
from .online_scaling_hook import OnlineScalingHook
from .pipeline_loop import LegoDNNPipelineLoop
from .task_metrics import DEFAULT_METRICS, evaluate_model, pick_metric

__all__ = ['DEFAULT_METRICS', 'LegoDNNPipelineLoop', 'OnlineScalingHook', 'evaluate_model', 'pick_metric']
