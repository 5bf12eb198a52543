"""mmlego's registries: children of mmengine's roots.

mmengine auto-imports a scope's modules only for the packages in its ``MODULE2PACKAGE`` table, and mmlego is not
in it. Every registry therefore names the modules that fill it in ``locations``: building anything with
``default_scope='mmlego'`` (or a ``mmlego.`` type prefix, as every mmlego config uses) imports them first, so
``custom_imports=dict(imports=['mmlego'])`` only has to make the ``mmlego`` scope known. The model-side registries
name :mod:`mmlego.models` alone: building a ``mmlego.LegoDNN`` to serve it never imports the training stack
(:mod:`mmlego.engine`: retraining, accuracy profiling; see :mod:`mmlego.runtime`).
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNER_CONSTRUCTORS as MMENGINE_RUNNER_CONSTRUCTORS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TASK_UTILS as MMENGINE_TASK_UTILS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

# The mmlego modules that register anything, imported on a registry's first use: the model side (what serving
# builds) only imports mmlego.models; every other registry imports both, so a module added to the engine is found
# from any of them whatever its type.
_MODEL_LOCATIONS = ['mmlego.models']
_LOCATIONS = ['mmlego.models', 'mmlego.engine']

RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS, locations=_LOCATIONS)
RUNNER_CONSTRUCTORS = Registry(
    'runner constructor', parent=MMENGINE_RUNNER_CONSTRUCTORS, locations=_LOCATIONS)
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, locations=_LOCATIONS)
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, locations=_LOCATIONS)
LOG_PROCESSORS = Registry('log processor', parent=MMENGINE_LOG_PROCESSORS, locations=_LOCATIONS)
OPTIMIZERS = Registry('optimizer', parent=MMENGINE_OPTIMIZERS, locations=_LOCATIONS)
OPTIM_WRAPPERS = Registry('optim wrapper', parent=MMENGINE_OPTIM_WRAPPERS, locations=_LOCATIONS)
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, locations=_LOCATIONS)
PARAM_SCHEDULERS = Registry('parameter scheduler', parent=MMENGINE_PARAM_SCHEDULERS, locations=_LOCATIONS)

MODELS = Registry('model', parent=MMENGINE_MODELS, locations=_MODEL_LOCATIONS)
MODEL_WRAPPERS = Registry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, locations=_MODEL_LOCATIONS)
WEIGHT_INITIALIZERS = Registry('weight initializer', parent=MMENGINE_WEIGHT_INITIALIZERS, locations=_MODEL_LOCATIONS)
TASK_UTILS = Registry('task util', parent=MMENGINE_TASK_UTILS, locations=_MODEL_LOCATIONS)

DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, locations=_LOCATIONS)
DATA_SAMPLERS = Registry('data sampler', parent=MMENGINE_DATA_SAMPLERS, locations=_LOCATIONS)
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, locations=_LOCATIONS)

METRICS = Registry('metric', parent=MMENGINE_METRICS, locations=_LOCATIONS)
EVALUATOR = Registry('evaluator', parent=MMENGINE_EVALUATOR, locations=_LOCATIONS)

VISUALIZERS = Registry('visualizer', parent=MMENGINE_VISUALIZERS, locations=_LOCATIONS)
VISBACKENDS = Registry('vis_backend', parent=MMENGINE_VISBACKENDS, locations=_LOCATIONS)
