"""Shared fixtures: a workspace with tiny synthetic datasets at the paths the configs name, a tiny TSN bank."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'

# The eight teachers on synthetic data, by task family.
TEACHER_CONFIGS = {
    'yolov3': 'detection/yolov3/yolov3_r18_synthdet.py',
    'faster_rcnn': 'detection/faster_rcnn/faster-rcnn_r18_fpn_synthdet.py',
    'fcn': 'segmentation/fcn/fcn_r18-d8_synthseg.py',
    'deeplabv3': 'segmentation/deeplabv3/deeplabv3_r18-d8_synthseg.py',
    'deeppose': 'pose/deeppose/deeppose_res18_synthpose-128x128.py',
    'simplebaseline': 'pose/simplebaseline/simplebaseline_res18_synthpose-128x128.py',
    'tsn': 'action/tsn/tsn_r18_synthaction.py',
    'trn': 'action/trn/trn_r18_synthaction.py',
}
# The same models on the real datasets (documented, load-tested, not trained here).
REAL_DATASET_CONFIGS = {
    'yolov3': 'detection/yolov3/yolov3_r18_voc0712.py',
    'faster_rcnn': 'detection/faster_rcnn/faster-rcnn_r18_fpn_voc0712.py',
    'fcn': 'segmentation/fcn/fcn_r18-d8_voc12aug-512x512.py',
    'deeplabv3': 'segmentation/deeplabv3/deeplabv3_r18-d8_voc12aug-512x512.py',
    'deeppose': 'pose/deeppose/deeppose_res18_mpii-256x256.py',
    'simplebaseline': 'pose/simplebaseline/simplebaseline_res18_mpii-256x256.py',
    'tsn': 'action/tsn/tsn_r18_hmdb51-rgb.py',
    'trn': 'action/trn/trn_r18_hmdb51-rgb.py',
}


@pytest.fixture(scope='module')
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is far faster than two contending ones.

    Use with ``pytestmark = pytest.mark.usefixtures('one_torch_thread')``; the thread count is restored after.
    """
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def workspace(tmp_path_factory) -> Path:
    """A directory holding ``data/synthetic/{det,seg,pose,action}`` with a few samples each."""
    from mmlego.datasets.synthetic import generate_all
    ws = tmp_path_factory.mktemp('workspace')
    generate_all(root=str(ws / 'data' / 'synthetic'), num_train=8, num_val=4)
    return ws


def fast_loader_options() -> list:
    """--cfg-options that make every dataloader single-process (tiny data, many short runs)."""
    opts = []
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.num_workers=0', f'{loader}.persistent_workers=False']
    return opts


def run_tool(tool: str, *args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``tools/<tool>`` in a subprocess (each run gets fresh registries, as a user's would)."""
    env = dict(os.environ, PYTHONWARNINGS='ignore', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / tool), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f'{tool} {" ".join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}')
    return proc


def load_tool(name: str):
    """``tools/<name>.py`` as a module (its ``main(argv)`` is the command line; SystemExit carries the status)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'mmlego_tools_{name}', ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool_in_process(tool: str, *args: str, cwd: Path) -> SimpleNamespace:
    """``tools/<tool>`` run through its ``main(argv)`` in this process (no interpreter start and stack import: many
    seconds per run); fails like :func:`run_tool` when the tool exits with an error. Use it for tools whose run
    leaves no state behind that other tests could see (registries and scopes are shared with the test process)."""
    import contextlib
    import io
    out, err = io.StringIO(), io.StringIO()
    module = load_tool(Path(tool).stem)
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result = module.main(list(args))
        except SystemExit as exit_:
            if exit_.code not in (None, 0):
                raise AssertionError(f'{tool} {" ".join(args)} failed:\n{out.getvalue()[-4000:]}\n'
                                     f'{err.getvalue()[-4000:]}\n{exit_.code}') from None
            result = None
    return SimpleNamespace(stdout=out.getvalue(), stderr=err.getvalue(), result=result)


TSN_LEGO_CONFIG = CONFIGS / 'action' / 'tsn' / 'tsn_r18_legodnn_synthaction.py'


def run_tool_one_thread(tool, *args, cwd):
    """run_tool with one OpenMP thread (the machine is shared)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('OMP_NUM_THREADS', '1')
        return run_tool(tool, *args, cwd=cwd)


def tiny_bank(name: str, lego_config: Path, root: Path, workspace: Path, sparsities: str = '[0.0,0.8]',
              seed: int = 0, options: tuple = (), teacher_options: dict | None = None) -> SimpleNamespace:
    """A random-init teacher checkpoint of ``TEACHER_CONFIGS[name]`` and its bank from tools/train.py (tiny run)."""
    import torch
    from mmengine.config import Config

    from mmlego.models import build_model
    torch.manual_seed(seed)
    teacher_cfg = Config.fromfile(str(CONFIGS / TEACHER_CONFIGS[name]))
    teacher_cfg.merge_from_dict(teacher_options or {})  # e.g. another width, matching ``options`` of the pipeline
    teacher = build_model(teacher_cfg)
    checkpoint = root / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict()}, checkpoint)
    del teacher
    run_tool_one_thread(
        'train.py', str(lego_config), '--work-dir', str(root / 'pipeline'), '--device', 'cpu', '--cfg-options',
        f'load_from={checkpoint}', 'train_cfg.retrain.max_batches_per_epoch=2', 'train_cfg.retrain.epochs=1',
        "train_cfg.references=['teacher']", 'train_cfg.latency_repeats=2', 'train_cfg.latency_min_seconds=0',
        f'train_cfg.sparsities={sparsities}',
        'train_cfg.max_val_batches=2', 'train_cfg.heldout_batches=1', *fast_loader_options(), *options,
        cwd=workspace)
    bank = root / 'pipeline' / 'bank'
    assert (bank / 'manifest.json').is_file()
    manifest = json.loads((bank / 'manifest.json').read_text())
    return SimpleNamespace(root=root, teacher=checkpoint, bank=bank, profiles=manifest['profiles'],
                           config=lego_config, teacher_options=teacher_options or {})


@pytest.fixture(scope='session')
def lego(workspace, tmp_path_factory):
    """A random-init TSN teacher checkpoint and its bank (sparsities 0.0 and 0.8) from tools/train.py."""
    return tiny_bank('tsn', TSN_LEGO_CONFIG, tmp_path_factory.mktemp('lego'), workspace)


POSE_LEGO_CONFIG = CONFIGS / 'pose' / 'simplebaseline' / 'simplebaseline_res18_legodnn_synthpose-128x128.py'


@pytest.fixture(scope='session')
def pose_lego(workspace, tmp_path_factory):
    """A second tiny bank, of another task family: a random-init SimpleBaseline teacher (sparsities 0.0, 0.8),
    its latencies profiled with ``model.latency_threads=2`` in a process running one thread."""
    return tiny_bank('simplebaseline', POSE_LEGO_CONFIG, tmp_path_factory.mktemp('pose_lego'), workspace,
                     options=('model.latency_threads=2',))
