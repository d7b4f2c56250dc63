"""From an ONNX file to the tensor IR: the import (importer: check, infer shapes,
clean up; build and its op table ops, quant for QDQ and QLinear/Integer ops), the
quantization of float models (quantize) and the early crossbar-capacity check."""
