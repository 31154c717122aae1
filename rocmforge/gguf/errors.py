"""The loader's one error type: every bad file, type or name surfaces as a GGUFError."""


class GGUFError(ValueError):
    """A GGUF file (or what it asks for) cannot be used. The message names the thing and what to do."""
