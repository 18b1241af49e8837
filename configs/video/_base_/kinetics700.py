# Kinetics-700 where MMAction2's Kinetics-700 configs keep it
# (recognition/slowonly/*_kinetics700-rgb.py); the videos are read by decord.
# The Table 7 baselines put these over their Kinetics-400 recipes. MMEngine
# refuses a key defined by two bases, so they are taken by reference
# (`train_dataloader = {{_base_.kinetics700.train_dataloader}}`) and merged
# into the recipe's dataloaders.
kinetics700_root = 'data/kinetics700/'
kinetics700 = dict(
    train_dataloader=dict(
        dataset=dict(
            ann_file=kinetics700_root + 'kinetics700_train_list_videos.txt',
            data_prefix=dict(video=kinetics700_root + 'videos_train'))),
    val_dataloader=dict(
        dataset=dict(
            ann_file=kinetics700_root + 'kinetics700_val_list_videos.txt',
            data_prefix=dict(video=kinetics700_root + 'videos_val'))),
    test_dataloader=dict(
        dataset=dict(
            ann_file=kinetics700_root + 'kinetics700_val_list_videos.txt',
            data_prefix=dict(video=kinetics700_root + 'videos_val'))))
