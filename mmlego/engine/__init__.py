"""mmengine-side glue: the pipeline and sweep loops, the online scaling hook and the runner (mmlego registries)."""
from .budget_sweep_loop import BudgetSweepLoop
from .online_scaling_hook import OnlineScalingHook
from .pipeline_loop import LegoDNNPipelineLoop
from .runner import LegoRunner
from .task_metrics import DEFAULT_METRICS, evaluate_model, pick_metric

__all__ = ['BudgetSweepLoop', 'DEFAULT_METRICS', 'LegoDNNPipelineLoop', 'LegoRunner', 'OnlineScalingHook',
           'evaluate_model', 'pick_metric']
