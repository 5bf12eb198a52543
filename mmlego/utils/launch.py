"""What tools/train.py and tools/test.py share: common arguments, config loading and the runner."""
import argparse
import difflib
import glob
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config, DictAction


def parse_common_args(parser: argparse.ArgumentParser) -> None:
    """Add the arguments every mmlego tool takes (work dir, config overrides, launcher, device)."""
    parser.add_argument('--work-dir', help='the directory to save logs, checkpoints and banks')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, e.g. train_cfg.max_epochs=2 (key=value pairs)')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none', help='job launcher')
    parser.add_argument(
        '--device', choices=['auto', 'cpu', 'cuda'], default='auto',
        help="'cpu' hides any GPU from this process; 'cuda' requires one; 'auto' (default) uses cuda when present")
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_budget_arg(text: str) -> dict:
    """``'memory=12.5MB,latency=30ms'`` -> ``{'memory_mb': 12.5, 'latency_ms': 30.0}`` (the one budget parser)."""
    from mmlego.scaling_optimizer.budget import parse_budget
    try:
        budget = parse_budget(text, where='--budget')
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return {key: value for key, value in budget.items() if value is not None}


def read_config(path) -> Config:
    """``Config.fromfile(path)``, with one clear error when ``path`` is no file; ``mmdet::retinanet/...``-style paths
    name an installed package's own config (``mmengine.hub.get_config``).

    Raises:
        FileNotFoundError: ``path`` does not exist; the message names the closest configs of this checkout
            (``configs/``) and of the installed package (``mmlego/.mim/configs``).
    """
    path = os.fspath(path)
    if '::' in path and not osp.isfile(path):
        from mmengine.hub import get_config
        try:
            return get_config(path)
        except (FileNotFoundError, ModuleNotFoundError, ValueError) as error:
            raise FileNotFoundError(f'{path}: no such config in the installed package ({error})') from None
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: no such config file (relative to {os.getcwd()})'
                                + _closest_configs(path))
    return Config.fromfile(path)


def _closest_configs(path: str) -> str:
    roots = ['configs', osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), '.mim', 'configs')]
    known = {}
    for root in roots:
        for found in glob.glob(osp.join(root, '**', '*.py'), recursive=True):
            known.setdefault(osp.basename(found), osp.relpath(found))
    close = difflib.get_close_matches(osp.basename(path), list(known), n=3, cutoff=0.6)
    return f'; did you mean {" or ".join(known[name] for name in close)}?' if close else ''


def load_config(args: argparse.Namespace) -> Config:
    """Load ``args.config`` with ``--cfg-options``, the launcher and the work dir applied."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if args.device == 'cpu':
        # Must happen before CUDA initializes; mmengine places the model on cuda whenever it is visible.
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    elif args.device == 'cuda':
        import torch
        if not torch.cuda.is_available():
            raise SystemExit('--device cuda was given but no CUDA device is visible; use --device cpu or auto')
    try:
        cfg = read_config(args.config)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.launcher != 'none' and _cpu_only(args):
        _configure_cpu_distributed(cfg)
    return cfg


def _configure_cpu_distributed(cfg: Config) -> None:
    """gloo collectives, and DDP without device ids (mmengine passes the local rank as a GPU id)."""
    from mmengine.registry import MODEL_WRAPPERS
    from torch.nn.parallel import DistributedDataParallel
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_type = MODEL_WRAPPERS.get(wrapper['type']) if isinstance(wrapper['type'], str) else wrapper['type']
    if wrapper_type is not None and issubclass(wrapper_type, DistributedDataParallel):
        wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def _cpu_only(args: argparse.Namespace) -> bool:
    import torch
    return args.device == 'cpu' or not torch.cuda.is_available()


def init_cpu_process_group(args: argparse.Namespace) -> None:
    """Join torchrun's process group with gloo when no GPU is used.

    mmengine 0.10.7's pytorch launcher calls ``torch.cuda.set_device`` unconditionally, which fails on a CPU-only
    machine; the Runner skips its own initialization when a process group already exists.
    """
    import torch.distributed as dist
    if args.launcher == 'pytorch' and _cpu_only(args) and not dist.is_initialized():
        dist.init_process_group(backend='gloo')


def build_runner(args: argparse.Namespace, mode: str, checkpoint: Optional[str] = None,
                 cfg: Optional[Config] = None):
    """Build the runner named by the config (``runner_type``) or mmengine's default one.

    ``cfg``: a config already loaded with :func:`load_config` (and edited by the tool); loaded from ``args`` if
    None.
    """
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    import mmlego  # noqa: F401  (registers mmlego's modules; the registries also find them by location)
    from mmlego.utils.checkpoint import scope_runner_checkpoint_loading

    cfg = load_config(args) if cfg is None else cfg
    init_cpu_process_group(args)
    if mode == 'train':
        if getattr(args, 'amp', False):
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        if getattr(args, 'auto_scale_lr', False):
            cfg.auto_scale_lr = dict(cfg.get('auto_scale_lr', {}), enable=True)
        if args.resume is not None and 'LegoDNN' in str(cfg.get('train_cfg', {}).get('type', '')):
            # The LegoDNN pipeline resumes its own stages from work_dir and always starts from the teacher.
            cfg.train_cfg.resume = True
        elif args.resume == 'auto':
            cfg.resume, cfg.load_from = True, None
        elif args.resume is not None:
            cfg.resume, cfg.load_from = True, args.resume
    elif checkpoint is not None:
        cfg.load_from = checkpoint
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    scope_runner_checkpoint_loading(runner)
    return runner
