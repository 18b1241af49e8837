# Step 2 of the demo's two-step recipe: the SoftPool RetinaNet-R18 demo
# (configs/demo/retinanet_r18_softpool_demo.py) whose backbone starts from the
# checkpoint of step 1, the classification demo:
#   python tools/train.py configs/pretrain/demo/resnet18_softpool_demo.py \
#       --work-dir work_dirs/pretrain_demo/resnet18_softpool
#   python tools/train.py \
#       configs/pretrain/demo/retinanet_r18_softpool_pretrained_demo.py
# Both backbones have the same state-dict keys, so every weight is loaded.
_base_ = '../../demo/retinanet_r18_softpool_demo.py'

model = dict(
    backbone=dict(
        init_cfg=dict(
            _delete_=True,  # the base has init_cfg=None
            type='Pretrained',
            checkpoint='work_dirs/pretrain_demo/resnet18_softpool/epoch_6.pth',
            prefix='backbone.')))
