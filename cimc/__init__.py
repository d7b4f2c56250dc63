"""cimc: a compiler from ONNX networks to compute-in-memory accelerator programs."""

__version__ = "0.1.0"
