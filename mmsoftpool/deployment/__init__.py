"""Deployment: detectors with their post-processing in the exported graph,
and the exported model run in ONNX Runtime as an mmdet model."""
