"""Datasets of the project: the generated demo shapes (:mod:`.demo`).
``DemoShapesCocoDataset`` (mmdet's DATASETS) and ``DemoShapesDataset``
(MMPretrain's, where it is installed) make their data on first use."""
from .demo import (DEMO_CLASSES, DemoShapesCocoDataset,
                   ensure_classification_demo, ensure_demo_dataset,
                   generate_classification_demo, generate_demo_dataset)

__all__ = [
    'DEMO_CLASSES', 'DemoShapesCocoDataset', 'ensure_classification_demo',
    'ensure_demo_dataset', 'generate_classification_demo',
    'generate_demo_dataset'
]
