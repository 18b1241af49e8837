from mmengine.hooks import Hook


class LastValidationHook(Hook):
    """Keeps the metrics of the run's last validation (ValLoop passes them to
    ``after_val_epoch``), for the demos to report once training ends."""

    def __init__(self):
        self.metrics = {}

    def after_val_epoch(self, runner, metrics=None):
        self.metrics = dict(metrics or {})
