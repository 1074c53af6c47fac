"""llama-cpp-python's OpenAI-compatible server, with llama.cpp's weight repacking turned off.

Run as ``python core/llama_server.py ARGS`` (the arguments of ``python -m llama_cpp.server``) by
``core.local_model``. On a CPU with AMX inside a virtual machine that does not give it the AMX
state (this project's machines: Firecracker), llama.cpp repacks the weights for AMX and the
process dies with SIGSEGV at the first token: the local model answered nothing at all. The
server has no option for it, so the default model parameters are wrapped to say
``use_extra_bufts = False`` (llama.cpp's ``--no-repack``). For a 270M model the repacked kernels
bring nothing worth a crash.
"""

from __future__ import annotations

import sys
from typing import Any

import llama_cpp
import llama_cpp.llama_cpp as low_level

_default_model_params = low_level.llama_model_default_params


def _without_repacking() -> low_level.llama_model_params:
    params: low_level.llama_model_params = _default_model_params()
    params.use_extra_bufts = False
    return params


def _mean_pooled() -> None:
    """Embeddings of the whole input, not of each token. The Gemma GGUF names no pooling, so
    llama.cpp gives one vector per token, which is not what /v1/embeddings answers; the
    server has no option for it, so the model's default is set to the mean."""
    original = llama_cpp.Llama.__init__

    def init(self: llama_cpp.Llama, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("pooling_type", llama_cpp.LLAMA_POOLING_TYPE_MEAN)
        original(self, *args, **kwargs)

    llama_cpp.Llama.__init__ = init  # type: ignore[method-assign]


def main() -> None:
    # llama_cpp.llama.Llama reads this function from the low-level module at each model load
    # (llama-cpp-python 0.3.x, pinned in requirements-local.txt).
    low_level.llama_model_default_params = _without_repacking
    if "--embedding" in sys.argv:
        _mean_pooled()
    from llama_cpp.server.__main__ import main as serve

    serve()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
