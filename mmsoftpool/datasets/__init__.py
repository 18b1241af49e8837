"""Datasets of the project: the demo generators; ``DemoShapesCocoDataset``
(mmdet's DATASETS) generates the detection demo on first use."""
from .demo import (DEMO_CLASSES, DemoShapesCocoDataset, ensure_demo_dataset,
                   generate_demo_dataset)

__all__ = [
    'DEMO_CLASSES', 'DemoShapesCocoDataset', 'ensure_demo_dataset',
    'generate_demo_dataset'
]
