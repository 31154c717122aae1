"""Fixtures shared across test folders."""

import pytest


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """The real SmolLM2 GGUF (pulled into the cache once), or a skip saying why it is missing."""
    from rocmforge.hub import ModelNotFoundError, resolve_model

    try:
        return str(resolve_model("smollm2"))
    except ModelNotFoundError as e:
        pytest.skip(f"SmolLM2 GGUF not available: {e}")
