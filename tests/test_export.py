"""Export of a chosen configuration: ONNX parity with onnxruntime per task family, the standalone artifact, tools."""
import json

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from .conftest import CONFIGS, load_tool
from .test_pipeline import LEGO_CONFIGS

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _scaled_model(name, path=None):
    """A random-init LegoDNN of ``name`` with a built (unprofiled) bank, every block at sparsity 0.5."""
    from mmengine.registry import MODELS

    import mmlego  # noqa: F401
    from mmlego.block_bank import BlockBank
    from mmlego.models import TENSOR_PATHS, example_batch
    cfg = Config.fromfile(CONFIGS / LEGO_CONFIGS[name])
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model).eval()
        model._bank_dir = None
        inputs = example_batch(cfg, model.architecture, split='test')
    model.cfg = cfg
    path = path or model.tensor_path or 'tensor'
    bank = BlockBank.build(model.architecture, [inputs], sparsities=[0.0, 0.5], show_progress=False,
                           forward_fn=TENSOR_PATHS[path])
    bank.meta['tensor_path'] = path
    model.attach_bank(bank)
    model.switch({spec.name: 0.5 for spec in bank.blocks})
    return model, inputs, TENSOR_PATHS[path]


def test_a_two_stage_detector_exports_its_traceable_part_and_its_latency_suite_says_why_not(workspace, tmp_path,
                                                                                            monkeypatch):
    """Faster R-CNN's path runs its RPN's NMS and the RoI head on the proposals: ONNX gets the traceable part
    (``extract_feat``, said in the artifact), and the ONNX latency suite, which must time whole composites, refuses."""
    import onnxruntime

    from mmlego.export import ExportError, export_configuration
    from mmlego.models import TENSOR_PATHS
    from mmlego.profiling.onnx_latency import export_latency_suite
    monkeypatch.chdir(workspace)
    model, inputs, forward = _scaled_model('faster_rcnn', 'tensor_with_samples')
    assert any(spec.name.startswith('roi_head.bbox_head.') for spec in model.bank.blocks)
    meta = export_configuration(model, tmp_path / 'artifact', inputs)
    assert meta['tensor_path'] == 'tensor_with_samples' and meta['onnx']['path'] == 'extract_feat'
    with torch.no_grad():
        expected = TENSOR_PATHS['extract_feat'](model.architecture, inputs)
    session = onnxruntime.InferenceSession(str(tmp_path / 'artifact' / 'model.onnx'),
                                           providers=['CPUExecutionProvider'])
    outputs = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    assert [o.shape for o in outputs] == [tuple(t.shape) for t in expected]
    with pytest.raises(ExportError, match='without --onnx'):
        export_latency_suite(model.bank, model.architecture, inputs, forward, tmp_path / 'suite')
    assert not (tmp_path / 'suite').exists()


@pytest.mark.parametrize('name', ['yolov3', 'fcn', 'simplebaseline', 'tsn'])
def test_onnx_export_matches_pytorch_and_the_artifact_runs_without_the_bank(name, workspace, tmp_path,
                                                                             monkeypatch):
    import onnxruntime

    from mmlego.export import load_configuration, export_configuration
    monkeypatch.chdir(workspace)
    model, inputs, forward = _scaled_model(name)
    with torch.no_grad():
        expected = [t for t in torch.utils._pytree.tree_leaves(forward(model.architecture, inputs))
                    if isinstance(t, torch.Tensor)]
    meta = export_configuration(model, tmp_path / 'artifact', inputs)
    assert meta['selection'] == model.selection and all(s == 0.5 for s in meta['selection'].values())
    assert meta['teacher_fingerprint'] == model.bank.fingerprint and meta['onnx']['opset'] >= 17
    # onnxruntime on the file, against the live model (not the exporter's copy).
    session = onnxruntime.InferenceSession(str(tmp_path / 'artifact' / 'model.onnx'),
                                           providers=['CPUExecutionProvider'])
    outputs = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        assert got.shape == tuple(want.shape)
        assert np.abs(got - want.numpy()).max() <= 1e-4
    # The artifact alone: smaller than the teacher, and the same outputs bit for bit.
    loaded, loaded_meta = load_configuration(tmp_path / 'artifact')
    assert loaded_meta['selection'] == meta['selection']
    teacher_params = sum(p.numel() for p in model.bank.descendant(model.bank.blocks[0].name, 0.0).module.parameters())
    pruned_params = sum(p.numel() for p in loaded.get_submodule(model.bank.blocks[0].members[0]).parameters())
    assert teacher_params > 0 and pruned_params < teacher_params
    with torch.no_grad():
        again = [t for t in torch.utils._pytree.tree_leaves(forward(loaded, inputs)) if isinstance(t, torch.Tensor)]
    assert all(torch.equal(a, b) for a, b in zip(again, expected))


def test_bad_exports_are_one_clear_error_and_write_nothing(workspace, tmp_path, monkeypatch):
    from mmlego.export import export_configuration
    monkeypatch.chdir(workspace)
    model, inputs, _ = _scaled_model('tsn')
    with pytest.raises(ValueError, match='opset must be an integer >= 17'):
        export_configuration(model, tmp_path / 'a', inputs, opset=16)
    assert list(tmp_path.iterdir()) == []  # no partial directory left
    # A layer the ONNX exporter cannot express (bessel_j0 after the tensor path): one error naming it.
    from mmlego.export import ExportError
    from mmlego.models import TENSOR_PATHS
    path = model.bank.meta['tensor_path']
    plain = TENSOR_PATHS[path]
    monkeypatch.setitem(TENSOR_PATHS, path, lambda m, x: torch.utils._pytree.tree_map(
        lambda t: torch.special.bessel_j0(t) if isinstance(t, torch.Tensor) else t, plain(m, x)))
    with pytest.raises(ExportError, match=r'cannot be exported to ONNX opset 18 \(DispatchError: No ONNX function '
                                          r'found for .*bessel_j0.*--no-onnx'):
        export_configuration(model, tmp_path / 'a', inputs)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setitem(TENSOR_PATHS, path, plain)
    (tmp_path / 'b').mkdir()
    with pytest.raises(FileExistsError, match='exists; choose another --out or pass --overwrite'):
        export_configuration(model, tmp_path / 'b', inputs)
    # A damaged artifact is refused on load.
    from mmlego.export import load_configuration
    export_configuration(model, tmp_path / 'c', inputs, onnx=False)
    weights = tmp_path / 'c' / 'weights.safetensors'
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match='missing or corrupted'):
        load_configuration(tmp_path / 'c')
    # A configuration.json edited into inconsistency with its (intact) weights: one message, not a KeyError.
    export_configuration(model, tmp_path / 'd', inputs, onnx=False)
    meta = json.loads((tmp_path / 'd' / 'configuration.json').read_text())
    meta['blocks'][0]['spec']['members'] = ['no.such.module']
    (tmp_path / 'd' / 'configuration.json').write_text(json.dumps(meta))
    with pytest.raises(ValueError, match='does not describe weights.safetensors'):
        load_configuration(tmp_path / 'd')


def test_export_tool_on_a_profiled_bank(lego, workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(workspace)
    tool = load_tool('export')
    out = tmp_path / 'export'
    args = [str(lego.config), str(lego.bank), '--checkpoint', str(lego.teacher), '--out', str(out)]
    meta = tool.main(args + ['--budget', 'memory=60%'])
    saved = json.loads((out / 'configuration.json').read_text())
    assert saved['selection'] == meta['selection'] and saved['budget']['memory_mb'] > 0
    assert saved['estimates']['memory_bytes'] <= saved['budget']['memory_mb'] * 2 ** 20 * (1 + 1e-9)
    assert saved['onnx']['max_abs_diff'] <= 1e-4
    with pytest.raises(SystemExit, match='cannot export: budget .* is infeasible'):
        tool.main([str(lego.config), str(lego.bank), '--checkpoint', str(lego.teacher), '--out',
                   str(tmp_path / 'small'), '--budget', 'memory=0.001MB'])
    assert not (tmp_path / 'small').exists()
    with pytest.raises(SystemExit, match='exists; choose another --out'):
        tool.main(args + ['--budget', 'memory=60%'])


def test_a_forward_that_samples_with_numpy_exports_the_draw_it_is_checked_against(tmp_path):
    """mmaction's TRN samples its relations with numpy's global generator in every forward: the exported graph bakes
    one draw, and the PyTorch reference it is checked against must make the same one (``same_draws``)."""
    from mmlego.export.onnx_export import TensorPathModule, export_onnx, onnx_max_abs_diff

    class Sampling(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            picked = np.random.choice(8, 4, replace=False)  # a fresh draw per forward, as TRN's relations
            return self.fc(x[:, picked])

    module = TensorPathModule(Sampling().eval(), lambda m, x: m(x))
    x = torch.randn(2, 8)
    path = tmp_path / 'sampling.onnx'
    before = np.random.get_state()
    export_onnx(module, x, path)
    state = np.random.get_state()
    assert all((a == b).all() if isinstance(a, np.ndarray) else a == b
               for a, b in zip(state, before))  # exporting draws nothing from the caller's generator
    assert onnx_max_abs_diff(path, module, x) <= 1e-5
    assert all((a == b).all() if isinstance(a, np.ndarray) else a == b
               for a, b in zip(np.random.get_state(), state))  # the caller's generator is left as it was
