"""An end-to-end ONNX detector (``tools/deployment/export.py --end2end``) run
in ONNX Runtime as an mmdet model, so that mmdet's own tools use it: the
Runner's test loop with ``CocoMetric``, ``DetInferencer`` and its visualiser.

The config's ``model`` becomes::

    model = dict(type='mmsoftpool.ONNXRuntimeDetector', onnx_file='model.onnx',
                 data_preprocessor=<the detector's data_preprocessor>)

(:func:`onnxruntime_model_cfg`); the config's pipeline and data preprocessor
make the input as for the PyTorch model, and the boxes are mapped back to the
original image as mmdet's ``rescale=True`` does; a Mask R-CNN's masks are
pasted into it as mmdet's ``FCNMaskHead`` pastes them, and binarised at the
config's ``test_cfg.rcnn.mask_thr_binary``.
"""
import json
import os.path as osp

import numpy as np
import torch
from mmengine.model import BaseModel
from mmengine.structures import InstanceData

from ..registry import MODELS

# metadata_props of the exported file, written by the export tool
META_KIND = 'mmsoftpool.kind'
META_CLASSES = 'mmsoftpool.classes'
META_PREPROCESS = 'mmsoftpool.preprocess'
END2END = 'end2end_detector'
OUTPUTS = ['dets', 'labels']
MASK_OUTPUTS = OUTPUTS + ['masks']


class ONNXModelError(ValueError):
    """The ONNX file or the input does not fit: the message says how."""


def open_session(onnx_file: str, threads: int = 0):
    """An ONNX Runtime CPU session of an end-to-end detector exported by the
    export tool, and its metadata; a clear error for anything else."""
    import onnxruntime
    if not osp.isfile(onnx_file):
        raise ONNXModelError(f'onnx_file: no such file {onnx_file!r}')
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        session = onnxruntime.InferenceSession(
            onnx_file, options, providers=['CPUExecutionProvider'])
    except Exception as error:  # ORT raises its own exception types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ONNXModelError(f'onnx_file {onnx_file!r} is not a model ONNX Runtime '
                             f'loads: {first}') from None
    meta = session.get_modelmeta().custom_metadata_map
    outputs = [output.name for output in session.get_outputs()]
    if meta.get(META_KIND) != END2END or outputs not in (OUTPUTS, MASK_OUTPUTS):
        raise ONNXModelError(
            f'onnx_file {onnx_file!r} is not an end-to-end detector (outputs '
            f'{outputs}): export it with tools/deployment/export.py --end2end')
    return session, meta


def check_input(session, onnx_file: str, image: np.ndarray) -> None:
    """Refuses, naming both, an input of sizes a static export does not take
    (ONNX Runtime's own message names neither the file nor the remedy)."""
    expected = session.get_inputs()[0].shape
    if image.ndim != len(expected) or any(
            isinstance(want, int) and want != got for want, got in zip(expected, image.shape)):
        shown = tuple(d if isinstance(d, int) else '?' for d in expected)
        raise ONNXModelError(
            f'{onnx_file!r} takes inputs of shape {shown} (? is dynamic), got '
            f'{tuple(image.shape)}: export with --dynamic, or with --shape of '
            'this size')


@MODELS.register_module()
class ONNXRuntimeDetector(BaseModel):
    """Predicts with an end-to-end ONNX detector in ONNX Runtime; training
    and the tensor mode are refused. ``mask_thr_binary``: the probability
    from which a pasted mask pixel is in the mask (mmdet's test_cfg)."""

    def __init__(self, onnx_file: str, data_preprocessor=None, threads: int = 0,
                 mask_thr_binary: float = 0.5, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.onnx_file = onnx_file
        self.mask_thr_binary = mask_thr_binary
        self.session, meta = open_session(onnx_file, threads)
        self.outputs = [output.name for output in self.session.get_outputs()]
        # the class names of the file (DetInferencer resets dataset_meta)
        self.session_classes = tuple(json.loads(meta[META_CLASSES]))
        self.dataset_meta = {'classes': self.session_classes}

    def forward(self, inputs, data_samples=None, mode: str = 'predict'):
        if mode != 'predict':
            raise ONNXModelError(f'ONNXRuntimeDetector predicts only, not mode={mode!r}')
        # float32 whatever the images were: the data preprocessor's output
        image = inputs.detach().cpu().contiguous().numpy()
        check_input(self.session, self.onnx_file, image)
        dets, labels, *masks = self.session.run(self.outputs, {'input': image})
        for i, sample in enumerate(data_samples):
            image_dets, image_labels = dets[i], labels[i]
            found = image_labels >= 0
            boxes = torch.from_numpy(image_dets[found, :4])
            # the graph clips to the padded input, mmdet to the resized image
            height, width = sample.img_shape
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
            scale = boxes.new_tensor(sample.scale_factor).repeat(2)
            boxes = boxes / scale
            sample.pred_instances = InstanceData(
                bboxes=boxes, scores=torch.from_numpy(image_dets[found, 4]),
                labels=torch.from_numpy(image_labels[found]))
            if masks:
                sample.pred_instances.masks = self._paste(
                    torch.from_numpy(masks[0][i][found]), boxes, sample.ori_shape)
        return data_samples

    def _paste(self, masks, boxes, shape):
        """``FCNMaskHead._predict_by_feat_single`` on CPU: each box's mask
        bilinearly resized into the original image, then binarised."""
        from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
        height, width = shape[:2]
        pasted = torch.zeros(len(masks), height, width, dtype=torch.bool)
        for i in range(len(masks)):
            mask, region = _do_paste_mask(masks[i:i + 1, None], boxes[i:i + 1],
                                          height, width, skip_empty=True)
            pasted[(slice(i, i + 1), ) + region] = mask >= self.mask_thr_binary
        return pasted


def onnxruntime_model_cfg(cfg, onnx_file: str) -> None:
    """Points ``cfg`` (an mmdet config) at ``onnx_file`` run in ONNX Runtime,
    in place; the detector's data preprocessor is kept."""
    rcnn = cfg.model.get('test_cfg', {}).get('rcnn') or {}
    cfg.model = dict(type='mmsoftpool.ONNXRuntimeDetector', onnx_file=onnx_file,
                     data_preprocessor=cfg.model.get('data_preprocessor'),
                     mask_thr_binary=rcnn.get('mask_thr_binary', 0.5))
    cfg.load_from = None
