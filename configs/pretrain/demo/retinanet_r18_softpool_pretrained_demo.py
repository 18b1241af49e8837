# Step 2 of the demo's two-step recipe: the SoftPool RetinaNet-R18 demo
# (configs/demo/retinanet_r18_softpool_demo.py) whose backbone starts from the
# checkpoint of step 1, the classification demo:
#   python tools/train.py configs/pretrain/demo/resnet18_softpool_demo.py \
#       --work-dir work_dirs/pretrain_demo/resnet18_softpool
#   python tools/train.py \
#       configs/pretrain/demo/retinanet_r18_softpool_pretrained_demo.py
# Both backbones have the same state-dict keys, so every weight is loaded.
_base_ = '../../demo/retinanet_r18_softpool_demo.py'

# test_cfg: keep every box for scoring (mmdet's default drops those under
# 0.05), so a run shortened with `--cfg-options train_cfg.max_epochs=...`
# still gets COCO metrics instead of CocoMetric's "results of the whole
# dataset is empty" error.
model = dict(
    test_cfg=dict(score_thr=0.0),
    backbone=dict(
        init_cfg=dict(
            _delete_=True,  # the base has init_cfg=None
            type='Pretrained',
            # the newest checkpoint step 1 wrote there (its last_checkpoint)
            checkpoint='work_dir://work_dirs/pretrain_demo/resnet18_softpool',
            prefix='backbone.')))
