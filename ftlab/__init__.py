"""ftlab: the thin package behind the fine-tuning course. Every function returns the libraries' real objects."""

from ftlab.embedded import DEFAULT_MODEL
from ftlab.generate import chat, generate_batch
from ftlab.models import ModelNotFoundError, load_model

__all__ = ["DEFAULT_MODEL", "ModelNotFoundError", "chat", "generate_batch", "load_model"]
__version__ = "0.1.0"
