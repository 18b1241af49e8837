"""Datasets of the project; plain functions, nothing is registered here."""
from .demo import DEMO_CLASSES, ensure_demo_dataset, generate_demo_dataset

__all__ = ['DEMO_CLASSES', 'ensure_demo_dataset', 'generate_demo_dataset']
