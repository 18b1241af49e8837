"""End-to-end detectors: RetinaNet and Mask R-CNN with their post-processing
in the graph (mmsoftpool.deployment.end2end), exported to ONNX with
NonMaxSuppression and RoiAlign, run in ONNX Runtime by mmdet's test loop,
DetInferencer and a numpy-only script; bad input refused in one line."""
import json
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from mmengine.config import Config
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import mmsoftpool  # noqa: F401
from mmsoftpool.deployment.end2end import DenseDetectorEnd2End, TwoStageEnd2End, decided_rows
from mmsoftpool.deployment.nms import nms

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOLS = osp.join(REPO, 'tools')
DEMO_CONFIG = osp.join(REPO, 'configs', 'demo', 'retinanet_r18_softpool_demo.py')
MASK_DEMO_CONFIG = osp.join(REPO, 'configs', 'demo', 'mask-rcnn_r18_softpool_demo.py')


def onnx_nms(boxes, scores, iou_threshold, score_threshold):
    """ONNX Runtime's NonMaxSuppression on the same arrays."""
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node('NonMaxSuppression', ['boxes', 'scores', 'max', 'iou', 'score'],
                          ['selected'])],
        'nms', [helper.make_tensor_value_info('boxes', TensorProto.FLOAT, None),
                helper.make_tensor_value_info('scores', TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info('selected', TensorProto.INT64, None)],
        [helper.make_tensor('max', TensorProto.INT64, [1], [10**6]),
         helper.make_tensor('iou', TensorProto.FLOAT, [1], [iou_threshold]),
         helper.make_tensor('score', TensorProto.FLOAT, [1], [score_threshold])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)], ir_version=9)
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=['CPUExecutionProvider'])
    return session.run(None, {'boxes': boxes.numpy(), 'scores': scores.numpy()})[0]


def test_nms_op_is_onnx_nonmaxsuppression():
    gen = torch.Generator().manual_seed(0)
    corners = torch.rand(2, 300, 2, generator=gen) * 100
    boxes = torch.cat([corners, corners + torch.rand(2, 300, 2, generator=gen) * 30 + 1], -1)
    scores = torch.rand(2, 3, 300, generator=gen)
    scores[0, 1, :50] = 0.25  # on the threshold: neither keeps them
    for iou, score in ((0.5, 0.25), (0.3, 0.0), (0.7, 0.9)):
        ours = nms(boxes, scores, iou, score)
        theirs = onnx_nms(boxes, scores, iou, score)
        assert len(ours) > 0
        assert sorted(map(tuple, ours.tolist())) == sorted(map(tuple, theirs.tolist()))


def random_detector(config):
    """The demo config's detector, randomly initialised (seed 0)."""
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    return MODELS.build(Config.fromfile(config).model).eval()


def graph_and_mmdet_predict(detector, wrapper, image):
    """The wrapper's outputs and mmdet's ``predict(rescale=False)`` on the
    same unpadded batch."""
    from mmdet.structures import DetDataSample
    shape = tuple(image.shape[-2:])
    samples = []
    for _ in range(len(image)):
        sample = DetDataSample()
        sample.set_metainfo(dict(img_shape=shape, ori_shape=shape, scale_factor=(1.0, 1.0)))
        samples.append(sample)
    with torch.no_grad():
        return wrapper(image), detector.predict(image, samples, rescale=False)


def assert_same_detections(image_dets, image_labels, pred) -> int:
    """One image's graph rows are mmdet's detections, in order; returns how
    many there are."""
    found = len(pred)
    assert found == 100 == int((image_labels >= 0).sum())  # max_per_img
    torch.testing.assert_close(image_dets[:found, :4], pred.bboxes)
    torch.testing.assert_close(image_dets[:found, 4], pred.scores)
    assert torch.equal(image_labels[:found], pred.labels)
    return found


def test_end2end_graph_is_mmdet_predict():
    """In eager, the graph's post-processing gives what mmdet's
    predict_by_feat gives: the same boxes, scores and labels, in order."""
    detector = random_detector(DEMO_CONFIG)
    (dets, labels), expected = graph_and_mmdet_predict(
        detector, DenseDetectorEnd2End(detector), torch.randn(2, 3, 96, 160))
    for image_dets, image_labels, sample in zip(dets, labels, expected):
        assert_same_detections(image_dets, image_labels, sample.pred_instances)


def test_two_stage_graph_is_mmdet_predict():
    """Mask R-CNN's graph gives what mmdet's predict (rescale=False) gives:
    the same boxes, scores and labels in order, and the same masks once
    pasted as FCNMaskHead pastes them."""
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    detector = random_detector(MASK_DEMO_CONFIG)
    wrapper = TwoStageEnd2End(detector)
    assert wrapper.output_names() == ['dets', 'labels', 'masks']
    (dets, labels, masks), expected = graph_and_mmdet_predict(
        detector, wrapper, torch.randn(2, 3, 96, 160))
    assert masks.shape[:2] == labels.shape and masks.shape[2:] == (28, 28)
    for image_dets, image_labels, image_masks, sample in zip(dets, labels, masks, expected):
        pred = sample.pred_instances
        found = assert_same_detections(image_dets, image_labels, pred)
        pasted, _ = _do_paste_mask(image_masks[:found, None], image_dets[:found, :4], 96, 160,
                                   skip_empty=False)
        assert torch.equal(pasted >= 0.5, pred.masks)
        assert not image_masks[found:].any()


def run(*args, cwd, check=True):
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True,
                            text=True, timeout=900)
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def shortened_demo_and_export(folder, detector, *cfg_options):
    """A shortened demo of ``detector`` (10 epochs on 16 images), its config
    as the Runner dumped it (data paths included) and its end-to-end ONNX
    export with a dynamic batch and size, made in ``folder`` (outside the
    checkout)."""
    work = folder / 'work'
    run(osp.join(TOOLS, 'demo.py'), '--detector', detector, '--data-root', str(folder / 'data'),
        '--work-dir', str(work), '--num-train', '16', '--num-val', '8', '--show-images', '1',
        '--cfg-options', 'train_cfg.max_epochs=10', *cfg_options, cwd=folder)
    (config, ) = work.glob('*_demo.py')
    checkpoint, model = str(work / 'epoch_10.pth'), str(folder / f'{detector}.onnx')
    exported = run(osp.join(TOOLS, 'deployment', 'export.py'), str(config), checkpoint,
                   '--end2end', '--dynamic', '--shape', '1', '3', '128', '128', '--out', model,
                   cwd=folder)
    return folder, str(config), checkpoint, model, exported.stdout


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    return shortened_demo_and_export(tmp_path_factory.mktemp('end2end'), 'retinanet',
                                     'model.test_cfg.score_thr=0.0')


@pytest.mark.slow
def test_end2end_export_is_standard_onnx(trained):
    _, _, _, model_file, stdout = trained
    assert '(2, 3, 160, 224): 2 outputs' in stdout  # checked at another batch and size
    model = onnx.load(model_file)
    onnx.checker.check_model(model, full_check=True)
    assert {node.domain for node in model.graph.node} == {''}
    assert 'NonMaxSuppression' in {node.op_type for node in model.graph.node}
    assert [o.name for o in model.graph.output] == ['dets', 'labels']
    meta = {prop.key: prop.value for prop in model.metadata_props}
    assert json.loads(meta['mmsoftpool.classes']) == ['circle', 'square', 'triangle']
    assert json.loads(meta['mmsoftpool.preprocess'])['resize']['scale'] == [128, 128]


def coco_stats(folder, config, model, *extra, iou_types=('bbox', )):
    """tools/test.py's COCO results for ``model``, scored again by COCOeval:
    the bbox results and the stats of each of ``iou_types``."""
    prefix = str(folder / ('ort' if extra else 'torch'))
    run(osp.join(TOOLS, 'test.py'), config, model, '--work-dir', prefix, *extra,
        '--cfg-options', f'test_evaluator.outfile_prefix={prefix}', cwd=folder)
    gt = COCO(str(folder / 'data' / 'annotations' / 'instances_val.json'))
    stats = []
    for iou_type in iou_types:
        with open(f'{prefix}.{iou_type}.json') as f:
            results = json.load(f)
        evaluator = COCOeval(gt, gt.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        stats.append(evaluator.stats)
    with open(f'{prefix}.bbox.json') as f:
        return json.load(f), stats[0] if len(stats) == 1 else stats


@pytest.mark.slow
def test_onnxruntime_coco_ap_matches_pytorch(trained):
    folder, config, checkpoint, model, _ = trained
    torch_results, torch_stats = coco_stats(folder, config, checkpoint)
    ort_results, ort_stats = coco_stats(folder, config, model, '--backend', 'onnxruntime')
    assert torch_stats[1] > 0  # mAP_50: something to compare
    assert abs(ort_stats[0] - torch_stats[0]) <= 0.005
    assert abs(ort_stats[1] - torch_stats[1]) <= 0.005
    assert same_decided_detections(torch_results, ort_results) >= 8


def same_decided_detections(torch_results, ort_results) -> int:
    """Checks that the detections are the same, up to float32 rounding, where
    their ranks do not hang on rounding (a barely trained model has many
    near-equal scores); returns how many were compared."""
    compared = 0
    for image_id in {r['image_id'] for r in torch_results}:
        theirs, ours = ([r for r in results if r['image_id'] == image_id]
                        for results in (torch_results, ort_results))
        theirs.sort(key=lambda r: -r['score'])
        ours.sort(key=lambda r: -r['score'])
        rows = decided_rows(torch.tensor([r['score'] for r in theirs]))
        compared += rows
        for mine, expected in zip(ours[:rows], theirs[:rows]):
            assert mine['category_id'] == expected['category_id']
            assert mine['score'] == pytest.approx(expected['score'], abs=1e-6)
            np.testing.assert_allclose(mine['bbox'], expected['bbox'], atol=1e-2)
    return compared


@pytest.mark.slow
def test_inference_tool_paints_onnxruntime_boxes(trained):
    folder, config, _, model, _ = trained
    image = folder / 'data' / 'val' / sorted(p.name for p in (folder / 'data' / 'val').iterdir())[0]
    result = run(osp.join(TOOLS, 'inference.py'), str(image), config, model, '--backend',
                 'onnxruntime', '--out-dir', str(folder / 'out'), '--score-thr', '0.0',
                 cwd=folder)
    assert '1 images, 1 with a box' in result.stdout
    import cv2
    assert cv2.imread(str(folder / 'out' / 'vis' / image.name)) is not None
    with open(folder / 'out' / 'preds' / (image.stem + '.json')) as f:
        preds = json.load(f)
    assert preds['bboxes'] and all(label in (0, 1, 2) for label in preds['labels'])


def docs_example():
    with open(osp.join(REPO, 'docs', 'deployment.md')) as f:
        text = f.read()
    return re.search(r'<!-- end2end example -->\n```python\n(.*?)```', text, re.S).group(1)


@pytest.mark.slow
def test_docs_example_runs_with_onnxruntime_numpy_and_pil_only(trained):
    folder, _, _, model, _ = trained
    script = folder / 'detect.py'
    # the example, then a check that nothing else was imported
    script.write_text(docs_example() + '\nassert "torch" not in sys.modules\n'
                      'assert "mmdet" not in sys.modules and "cv2" not in sys.modules\n')
    image = sorted((folder / 'data' / 'val').iterdir())[0]
    result = run(str(script), model, str(image), '0.0', cwd=folder)
    lines = result.stdout.splitlines()
    assert lines and all(re.fullmatch(r'(circle|square|triangle) 0\.\d{3} '
                                      r'\[( ?-?\d+\.\d, ?){3} ?-?\d+\.\d\]', line)
                         for line in lines), lines[:5]


@pytest.mark.slow
@pytest.mark.parametrize('case', ['missing file', 'not onnx', 'raw outputs', 'wrong size',
                                  'other model'])
def test_bad_input_is_one_line_exit_2(trained, case, tmp_path):
    folder, config, checkpoint, model, _ = trained
    test_tool = osp.join(TOOLS, 'test.py')
    if case == 'missing file':
        args = [test_tool, config, str(tmp_path / 'none.onnx'), '--backend', 'onnxruntime']
        expected = 'no such file'
    elif case == 'not onnx':
        args = [test_tool, config, checkpoint, '--backend', 'onnxruntime']
        expected = 'is not a model ONNX Runtime loads'
    elif case == 'raw outputs':
        raw = str(tmp_path / 'raw.onnx')
        run(osp.join(TOOLS, 'deployment', 'export.py'), config, checkpoint, '--shape', '1',
            '3', '128', '128', '--out', raw, cwd=tmp_path)
        args = [osp.join(TOOLS, 'inference.py'), str(folder / 'data' / 'val'), config, raw,
                '--backend', 'onnxruntime', '--out-dir', str(tmp_path / 'out')]
        expected = 'is not an end-to-end detector'
    elif case == 'wrong size':
        static = str(tmp_path / 'static.onnx')
        run(osp.join(TOOLS, 'deployment', 'export.py'), config, checkpoint, '--end2end',
            '--shape', '1', '3', '64', '64', '--out', static, cwd=tmp_path)
        args = [test_tool, config, static, '--backend', 'onnxruntime']
        expected = 'takes inputs of shape (1, 3, 64, 64)'
    else:  # the COCO RetinaNet-R18: 80 classes where the demo's has 3
        args = [osp.join(TOOLS, 'deployment', 'export.py'),
                osp.join(REPO, 'configs', 'retinanet', 'retinanet_r18_softpool.py'),
                checkpoint, '--end2end', '--out', str(tmp_path / 'x.onnx')]
        expected = 'is not one of the model of'
    result = run(*args, cwd=tmp_path, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert expected in lines[-1], lines[-3:]
    assert 'Traceback' not in result.stderr


@pytest.fixture(scope='module')
def trained_mask_rcnn(tmp_path_factory):
    return shortened_demo_and_export(tmp_path_factory.mktemp('end2end_mask'), 'mask_rcnn')


@pytest.mark.slow
def test_mask_rcnn_onnxruntime_coco_ap_matches_pytorch(trained_mask_rcnn):
    folder, config, checkpoint, model_file, stdout = trained_mask_rcnn
    assert '(2, 3, 160, 224): 3 outputs' in stdout
    model = onnx.load(model_file)
    assert {node.domain for node in model.graph.node} == {''}
    assert {'NonMaxSuppression', 'RoiAlign'} <= {node.op_type for node in model.graph.node}
    assert [o.name for o in model.graph.output] == ['dets', 'labels', 'masks']
    both = ('bbox', 'segm')
    torch_results, torch_stats = coco_stats(folder, config, checkpoint, iou_types=both)
    ort_results, ort_stats = coco_stats(folder, config, model_file, '--backend', 'onnxruntime',
                                        iou_types=both)
    for theirs, ours in zip(torch_stats, ort_stats):
        assert theirs[1] > 0  # mAP_50: something to compare
        assert abs(ours[0] - theirs[0]) <= 0.005 and abs(ours[1] - theirs[1]) <= 0.005
    assert same_decided_detections(torch_results, ort_results) >= 8

