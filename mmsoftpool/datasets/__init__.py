"""Datasets of the project: the generated demo shapes (:mod:`.demo`) and
action clips (:mod:`.action_demo`). ``DemoShapesCocoDataset`` (mmdet's
DATASETS), ``DemoShapesDataset`` (MMPretrain's) and ``DemoActionsDataset``
(MMAction2's), each where its library is installed, make their data on first
use."""
from .action_demo import ACTION_CLASSES, ensure_action_demo, generate_action_demo
from .demo import (
                          DEMO_CLASSES,
                          DemoShapesCocoDataset,
                          ensure_classification_demo,
                          ensure_demo_dataset,
                          generate_classification_demo,
                          generate_demo_dataset,
)

__all__ = [
    'ACTION_CLASSES', 'ensure_action_demo', 'generate_action_demo',
    'DEMO_CLASSES', 'DemoShapesCocoDataset', 'ensure_classification_demo',
    'ensure_demo_dataset', 'generate_classification_demo',
    'generate_demo_dataset'
]
