"""Reads a reg4rec checkpoint with PyTorch (through the safetensors package) and writes back what it saw.

usage: python pytorch_roundtrip.py CHECKPOINT SEEN_JSON DOUBLED_SAFETENSORS

SEEN_JSON gets torch's version, the file's metadata and, per tensor, its dtype, shape and values (flattened, as
Python floats, which hold f32 values exactly). DOUBLED_SAFETENSORS gets every tensor times two, saved by
PyTorch without metadata, for reg4rec to load back.
"""
import json
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

path, seen_path, doubled_path = sys.argv[1:4]
tensors = load_file(path)
with safe_open(path, framework="pt") as f:
    metadata = f.metadata()
seen = {
    "torch": torch.__version__,
    "metadata": metadata,
    "tensors": {
        name: {"dtype": str(t.dtype), "shape": list(t.shape), "values": t.flatten().tolist()}
        for name, t in tensors.items()
    },
}
with open(seen_path, "w") as out:
    json.dump(seen, out)
save_file({name: (t * 2).contiguous() for name, t in tensors.items()}, doubled_path)
