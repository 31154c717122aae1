"""GGUF: reader, quant type table, dequantization, tokenizer and chat template."""

from .dequant import dequantize
from .errors import GGUFError
from .reader import GGUFFile, TensorInfo

__all__ = ["GGUFError", "GGUFFile", "TensorInfo", "dequantize"]
