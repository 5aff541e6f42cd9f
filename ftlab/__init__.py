"""ftlab: the thin package behind the fine-tuning course. Every function returns the libraries' real objects.

`from ftlab import load_model, train, merge_adapter` works for every name below. Each is imported on
first use (PEP 562), so `ftlab --help` or `import ftlab.data` does not pay for TRL, PEFT and bitsandbytes.
On a CUDA GPU with Unsloth installed (where backend='auto' picks it), `import ftlab` imports Unsloth first,
before anything loads transformers, PEFT or TRL, as Unsloth asks; FTLAB_UNSLOTH=0 keeps a process plain.

Layers: a module imports only from its own line or the lines above it, never below (imports inside
functions count; tests/test_layers.py checks every edge against this table):
  core        shipped fingerprint hardware embedded course
  data        formats data lossmask config examples
  models      quant generate bottleneck adapters models merge
  evaluation  tasks rewards evaluation exercises
  artefacts   curves monitor report export
  training    preflight speed training
  front ends  estimation doctor panels cli
"""

import importlib
import importlib.util

_WHERE = {  # public name -> the module that defines it
    "DEFAULT_MODEL": "embedded", "ModelNotFoundError": "models", "load_model": "models",
    "chat": "generate", "generate_batch": "generate",
    "TrainConfig": "config", "load_config": "config", "save_config": "config",
    "convert": "data", "convert_file": "data", "loss_mask": "lossmask",
    "train": "training", "estimate": "estimation",
    "merge_adapter": "merge", "load_adapters": "merge", "combine_adapters": "merge",
    "export_gguf": "export", "evaluate": "evaluation", "eval_loss": "evaluation", "contamination": "evaluation",
}
__all__ = sorted(_WHERE)
__version__ = "0.1.0"

if importlib.util.find_spec("unsloth") is not None:  # the common case (no Unsloth) costs nothing, not even torch
    from ftlab.hardware import import_unsloth_first

    import_unsloth_first()


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module 'ftlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ftlab.{_WHERE[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return __all__
