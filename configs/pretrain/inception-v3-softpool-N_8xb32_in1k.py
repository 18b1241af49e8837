# InceptionV3, the paper's Table 6 column N: the original network (no SoftPool)
# with the recipe of inception-v3-softpool-VII_8xb32_in1k.py.
_base_ = './inception-v3-softpool-VII_8xb32_in1k.py'

model = dict(backbone=dict(soft_pool_sites=[]))
