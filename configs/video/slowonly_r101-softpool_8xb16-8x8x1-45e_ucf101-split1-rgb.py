# Table 7's "SRTG r3d-101 with SoftPool", fine-tuned on UCF-101 (split 1) from its
# Kinetics-700 training, as the paper fine-tunes. Paths and schedule are
# those of MMAction2's UCF-101 config (_base_/ucf101-split1_finetune-45e.py);
# clips and model are those of the Kinetics-700 parent.
_base_ = [
    './slowonly_r101-softpool_8xb16-8x8x1-196e_kinetics700-rgb.py',
    './_base_/ucf101-split1_finetune-45e.py'
]

# The parent's last checkpoint (train it first, or give yours with
# --cfg-options load_from=...); it is loaded with weights_only=True.
load_from = 'work_dirs/slowonly_r101-softpool_8xb16-8x8x1-196e_kinetics700-rgb/epoch_196.pth'
model = {{_base_.ucf101_finetune.model}}
train_dataloader = {{_base_.ucf101_finetune.train_dataloader}}
val_dataloader = {{_base_.ucf101_finetune.val_dataloader}}
test_dataloader = {{_base_.ucf101_finetune.test_dataloader}}
train_cfg = {{_base_.ucf101_finetune.train_cfg}}
param_scheduler = {{_base_.ucf101_finetune.param_scheduler}}
optim_wrapper = {{_base_.ucf101_finetune.optim_wrapper}}
