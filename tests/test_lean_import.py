"""`import torchslim` stays light: no backends, no CUDA, no logging set-up."""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, logging, sys
before = len(logging.getLogger().handlers)
import torchslim
heavy = [m for m in ("torch", "onnxruntime", "openvino", "nncf", "transformers", "tensorrt")
         if m in sys.modules]
print(json.dumps({"heavy": heavy, "handlers": len(logging.getLogger().handlers) - before,
                  "version": torchslim.__version__}))
"""


def test_import_torchslim_is_light() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert info["heavy"] == []
    assert info["handlers"] == 0
    assert info["version"]


def test_loading_a_model_does_not_import_backends_or_cuda() -> None:
    code = (
        "import sys, torchslim\n"
        "m = torchslim.load_model('torchvision:resnet18')\n"
        "import torch\n"
        "print(sorted(k for k in ('onnxruntime','openvino','nncf') if k in sys.modules),"
        " torch.cuda.is_initialized())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] False"
