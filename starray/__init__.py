"""starray."""

from __future__ import annotations

from typing import Any


def load_model(path: Any) -> tuple[Any, dict[str, Any]]:
    """Load an exported model in eval mode -> (model, meta); see starray.export.load_model."""
    from starray.export import load_model as f

    return f(path)
