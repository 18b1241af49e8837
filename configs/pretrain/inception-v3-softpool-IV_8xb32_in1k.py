# InceptionV3, the paper's Table 6 column IV: SoftPool at the first 4 sites,
# with the recipe of inception-v3-softpool-VII_8xb32_in1k.py.
_base_ = './inception-v3-softpool-VII_8xb32_in1k.py'

model = dict(
    backbone=dict(
        soft_pool_sites=['pool_1', 'pool_2', 'mixed_5b-d', 'mixed_6a']))
