"""Scale a LegoDNN model to a budget, run it on one sample, and save the task package's own visualization.

    python demo/lego_demo.py CONFIG BANK [--checkpoint TEACHER.pth] [--memory-mb X] [--latency-ms Y]
        [--input PATH] [--bbox X1 Y1 X2 Y2] --out out.png

CONFIG is a legodnn config or any OpenMMLab task config (its model is wrapped); BANK is the block bank directory
(``work_dir/bank`` of ``tools/train.py`` on the legodnn config). The teacher weights come from --checkpoint, else
the config's ``load_from``, else the checkpoint the bank recorded. Without --input the first sample of the
config's test set is used (run from the directory the config's data paths are relative to). --input is an
image (det, seg, pose; pose takes --bbox, default the whole image) or a rawframe directory / video (action).
The visualizer is the config's ``visualizer`` (DetLocalVisualizer, SegLocalVisualizer, PoseLocalVisualizer,
ActionVisualizer). ``demo/lego_{det,seg,pose,action}_demo.py`` are this script for one task family.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np


def parse_args(argv=None, family: str | None = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    what = f'{family} ' if family else ''
    parser = argparse.ArgumentParser(description=f'LegoDNN {what}demo: scale, infer, visualize')
    parser.add_argument('config', help='legodnn config or OpenMMLab task config')
    parser.add_argument('bank', help='block bank directory (or a checkpoint, to run the teacher unscaled)')
    parser.add_argument('--checkpoint', help='teacher checkpoint (default: load_from, else the bank\'s record)')
    parser.add_argument('--memory-mb', type=float, help='memory budget in MiB')
    parser.add_argument('--latency-ms', type=float, help='latency budget in ms')
    parser.add_argument('--input', help='image (det/seg/pose) or rawframe dir / video (action); '
                                        'default: the first sample of the config\'s test set')
    parser.add_argument('--bbox', type=float, nargs=4, metavar=('X1', 'Y1', 'X2', 'Y2'),
                        help='pose: the person box (default: the whole image, or the test sample\'s box)')
    parser.add_argument('--score-thr', type=float, default=0.3, help='det: boxes below are not drawn')
    parser.add_argument('--kpt-thr', type=float, default=0.3, help='pose: keypoints below are not drawn')
    parser.add_argument('--out', required=True, help='where to save the visualization (PNG)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help='override config settings, as in tools/train.py')
    return parser.parse_args(argv)


# -- the test sample -------------------------------------------------------------------------------------------
def first_test_sample(cfg) -> dict:
    """The data info (paths, boxes; nothing decoded) of the first sample of the config's test set."""
    from mmengine.registry import DATASETS, DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
    if len(dataset) == 0:
        raise SystemExit('the config\'s test set is empty; check data_root/ann_file or pass --input')
    return dataset.get_data_info(0)


# -- one small part per task family: inputs from a sample, and drawing ----------------------------------------------
def _image(path_or_array: Any) -> np.ndarray:
    import mmcv
    return mmcv.imread(path_or_array, channel_order='rgb')


def _clip_frames(clip: str, max_frames: int = 8) -> list[np.ndarray]:
    import mmcv
    if os.path.isdir(clip):
        names = sorted(f for f in os.listdir(clip) if not f.startswith('.'))
        frames = [os.path.join(clip, name) for name in names]
    else:
        frames = [mmcv.bgr2rgb(f) for f in mmcv.VideoReader(clip)]
    picked = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    return [_image(frames[i]) if isinstance(frames[i], str) else frames[i] for i in picked]


def _image_family_inputs(args, sample):
    return (args.input or sample['img_path']), {}


def _pose_inputs(args, sample):
    if args.bbox is not None:
        return (args.input or sample['img_path']), dict(bboxes=[args.bbox])
    if args.input:
        return args.input, {}
    return sample['img_path'], dict(bboxes=sample['bbox'])


def _action_inputs(args, sample):
    return (args.input or sample.get('frame_dir') or sample['filename']), {}


def _draw_det(visualizer, model, inputs, result, args):
    visualizer.dataset_meta = model.dataset_meta
    visualizer.add_datasample('result', _image(inputs), result, draw_gt=False, pred_score_thr=args.score_thr)
    return visualizer.get_image()


def _draw_seg(visualizer, model, inputs, result, args):
    visualizer.dataset_meta = model.dataset_meta
    visualizer.add_datasample('result', _image(inputs), result, draw_gt=False)
    return visualizer.get_image()


def _draw_pose(visualizer, model, inputs, result, args):
    visualizer.set_dataset_meta(model.dataset_meta)
    visualizer.add_datasample('result', _image(inputs), result, draw_gt=False, draw_bbox=True, kpt_thr=args.kpt_thr)
    return visualizer.get_image()


def _draw_action(visualizer, model, inputs, result, args):
    from mmengine.structures import LabelData
    visualizer.dataset_meta = model.dataset_meta
    sample = result
    if 'pred_labels' not in result and 'pred_label' in result:
        # mmaction2 1.2.0's ActionVisualizer still reads the 1.0 field ``pred_labels`` (item, score) while its
        # recognizers set ``pred_label``/``pred_score``: give it the prediction under the name it reads.
        sample = result.clone()
        sample.pred_labels = LabelData(item=result.pred_label, score=result.pred_score)
    frames = _clip_frames(inputs, max_frames=4)
    scale = max(1.0, 256 / min(frames[0].shape[:2]))  # small clips: enlarge so the labels are legible
    frames = visualizer.add_datasample('result', frames, sample, draw_gt=False, rescale_factor=scale)
    return np.concatenate(list(frames), axis=1)  # the frames side by side


FAMILIES = {
    'det': (_image_family_inputs, _draw_det),
    'seg': (_image_family_inputs, _draw_seg),
    'pose': (_pose_inputs, _draw_pose),
    'action': (_action_inputs, _draw_action),
}


def build_visualizer(cfg):
    from mmengine.registry import VISUALIZERS, DefaultScope
    if not cfg.get('visualizer'):
        raise SystemExit('the config has no "visualizer"; add the task package\'s visualizer to it')
    visualizer_cfg = dict(cfg.visualizer, name=f'lego_demo_{os.getpid()}')
    visualizer_cfg.pop('save_dir', None)  # draw only; the demo writes --out itself
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return VISUALIZERS.build(visualizer_cfg)


def main(argv=None, family: str | None = None) -> dict:
    args = parse_args(argv, family)
    import mmcv

    from mmlego.apis import inference_lego_model, init_lego_model, scale_model, task_family
    model = init_lego_model(args.config, args.bank, device=args.device, cfg_options=args.cfg_options,
                            checkpoint=args.checkpoint)
    found = task_family(model)
    if found not in FAMILIES:
        raise SystemExit(f'unknown task family of {type(model.architecture).__name__}: this demo draws '
                         f'{sorted(FAMILIES)} models')
    if family is not None and found != family:
        raise SystemExit(f'this is the {family} demo but the config is a {found} model; use '
                         f'demo/lego_{found}_demo.py')

    summary: dict = {}
    if args.memory_mb is not None or args.latency_ms is not None:
        summary = scale_model(model, latency_ms=args.latency_ms, memory_mb=args.memory_mb)
        sparsities = sorted(set(summary['selection'].values()))
        print(f'budget memory={args.memory_mb} MB, latency={args.latency_ms} ms -> {summary["status"]}: '
              f'estimated {summary["metric_name"]}={summary["metric"]:.4f} (teacher {summary["teacher_metric"]:.4f}), '
              f'{summary["memory_mb"]:.2f} MB (teacher {summary["teacher_memory_mb"]:.2f}), '
              f'{summary["latency_ms"]:.2f} ms (teacher {summary["teacher_latency_ms"]:.2f}); '
              f'{len(summary["selection"])} blocks at sparsities {sparsities}')
        for block, sparsity in summary['selection'].items():
            print(f'  {block}: {sparsity:g}')
    else:
        print('no budget given: running the teacher (all blocks at sparsity 0)')

    make_inputs, draw = FAMILIES[found]
    sample = None if args.input else first_test_sample(model.cfg)
    inputs, kwargs = make_inputs(args, sample)
    result = inference_lego_model(model, inputs, **kwargs)
    image = draw(build_visualizer(model.cfg), model, inputs, result, args)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    if not mmcv.imwrite(mmcv.rgb2bgr(np.ascontiguousarray(image)), args.out):
        raise SystemExit(f'could not write {args.out}')
    print(f'{type(result).__name__} for {inputs} -> {args.out}')
    return dict(summary, result=result, out=args.out)


if __name__ == '__main__':
    main()
