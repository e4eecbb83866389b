"""The built-in passes, registered once. Importing this module imports no backend.

Each technique family lives in its own module (``fuse``, ``quantize``, ``prune``, ...) and is
registered here by config type, so ``list_passes()`` can answer what exists cheaply.
"""

from __future__ import annotations

# Registrations are added here as technique families land, e.g.:
# register_pass("fuse.conv_bn", FuseConfig, "torchslim.passes.fuse:apply_fuse", ...)
