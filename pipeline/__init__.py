"""edgeship: PyTorch model -> hardware-friendly model -> validated, profiled ONNX / TFLite / OpenVINO artifacts."""

__version__ = "0.1.0"
