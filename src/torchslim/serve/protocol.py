"""The Open Inference Protocol (KServe v2) REST payloads, with the binary tensor extension.

Requests and responses are JSON; a tensor's values are either in its ``data`` list (row-major,
flattened) or, with the binary tensor extension, appended after the JSON as raw little-endian bytes
(the JSON's length in the ``Inference-Header-Content-Length`` header, each tensor's byte count in
its ``parameters.binary_data_size``). This is what Triton, KServe and MLServer speak, so their
clients (``tritonclient.http``) work unchanged.

Everything here is pure NumPy: parsing never unpickles anything, and a malformed payload raises
:class:`ProtocolError` (answered 400) or :class:`~torchslim.errors.ShapeError` (answered 422).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from torchslim.errors import ShapeError, TorchslimError

__all__ = [
    "HEADER_LENGTH",
    "V2_TO_NUMPY",
    "DecodedRequest",
    "ProtocolError",
    "decode_infer_request",
    "encode_infer_response",
    "numpy_to_v2",
    "torch_dtype_to_v2",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
"""Header naming the JSON part's length when binary tensors follow it."""

V2_TO_NUMPY: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
"""Protocol datatype → NumPy dtype name (``BYTES`` and ``BF16`` tensors are not supported)."""

_NUMPY_TO_V2 = {v: k for k, v in V2_TO_NUMPY.items()}
_TORCH_TO_V2 = {"bfloat16": "BF16", **_NUMPY_TO_V2}


class ProtocolError(TorchslimError):
    """A request that does not follow the protocol (bad JSON, sizes that do not add up)."""


def numpy_to_v2(dtype: Any) -> str:
    """The protocol datatype of a NumPy dtype (``float32`` → ``FP32``)."""
    name = np.dtype(dtype).name
    if name not in _NUMPY_TO_V2:
        raise ProtocolError(f"Tensors of dtype {name} cannot be sent.", "Use numeric tensors.")
    return _NUMPY_TO_V2[name]


def torch_dtype_to_v2(name: str) -> str:
    """The protocol datatype of a torch dtype name as :class:`~torchslim.specs.TensorSpec` has."""
    return _TORCH_TO_V2.get(name, name.upper())


@dataclass
class DecodedRequest:
    """An infer request, decoded.

    Attributes:
        id: The request id to echo back ("" when none).
        inputs: Input name → array, in the order the request listed them.
        outputs: Names of the outputs asked for (empty: all).
        binary_outputs: Output name → whether to send it as binary (``None`` key: the default).
        timeout_ms: The request's own timeout (``parameters.timeout``, in µs on the wire).
    """

    id: str
    inputs: dict[str, np.ndarray]
    outputs: list[str]
    binary_outputs: dict[str | None, bool]
    timeout_ms: float | None


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and d >= 0 for d in value):
        raise ProtocolError(f"{where}: 'shape' must be a list of non-negative integers.")
    return tuple(value)


def decode_infer_request(body: bytes, header_length: int | None) -> DecodedRequest:
    """Parse ``POST /v2/models/{name}/infer`` (JSON, or JSON + binary tensors).

    Args:
        body: The whole (decompressed) request body.
        header_length: ``Inference-Header-Content-Length``: bytes of JSON before the binary
            part; ``None`` when the whole body is JSON.

    Raises:
        ProtocolError: Not valid JSON, missing fields, binary sizes that do not match the body.
        ShapeError: A tensor whose data does not fill its shape, or an unsupported datatype.
    """
    if header_length is not None and not 0 < header_length <= len(body):
        raise ProtocolError(
            f"{HEADER_LENGTH} is {header_length} but the body has {len(body)} bytes.",
            "Send the length of the JSON part of the body.",
        )
    head = body if header_length is None else body[:header_length]
    try:
        req = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"The request is not valid JSON: {exc}.") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list) or not req["inputs"]:
        raise ProtocolError("An infer request needs a non-empty 'inputs' list.")
    binary = memoryview(body)[header_length:] if header_length is not None else memoryview(b"")
    offset = 0
    inputs: dict[str, np.ndarray] = {}
    for i, t in enumerate(req["inputs"]):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise ProtocolError(f"inputs[{i}] needs a 'name'.")
        name = t["name"]
        where = f"input '{name}'"
        shape = _shape(t.get("shape"), where)
        dtype_name = V2_TO_NUMPY.get(str(t.get("datatype", "")).upper())
        if dtype_name is None:
            raise ShapeError(
                f"{where} has datatype {t.get('datatype')!r}, which this server does not take.",
                f"Send one of: {', '.join(V2_TO_NUMPY)}.",
            )
        dtype = np.dtype(dtype_name).newbyteorder("<")
        count = math.prod(shape)
        params = t.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise ProtocolError(
                    f"{where}: binary_data_size {size} runs past the end of the body.",
                    f"Send the tensors' bytes after the JSON and the JSON's length in {HEADER_LENGTH}.",
                )
            if size != count * dtype.itemsize:
                raise ShapeError(
                    f"{where}: {size} bytes do not hold shape {list(shape)} of {t['datatype']} "
                    f"({count * dtype.itemsize} bytes).",
                    "Send as many bytes as the shape and datatype need.",
                )
            arr = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape)
            offset += size
        else:
            data = t.get("data")
            if data is None:
                raise ProtocolError(f"{where} has neither 'data' nor binary_data_size.")
            try:
                arr = np.asarray(data, dtype=dtype)
            except (ValueError, TypeError, OverflowError):
                raise ShapeError(
                    f"{where}: 'data' is not a list of {t['datatype']} numbers.",
                    "Send numbers only (nested or flat, row-major).",
                ) from None
            if arr.size != count:
                raise ShapeError(
                    f"{where}: {arr.size} values do not fill shape {list(shape)} ({count}).",
                    "Send exactly as many values as the shape holds.",
                )
            arr = arr.reshape(shape)
        if name in inputs:
            raise ProtocolError(f"Input '{name}' is given twice.")
        inputs[name] = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("="))
    if offset != len(binary):
        raise ProtocolError(
            f"{len(binary) - offset} bytes after the binary tensors are not claimed by any input.",
            "Give each binary input its parameters.binary_data_size.",
        )
    params = req.get("parameters") or {}
    default_binary = (
        bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    )
    outputs: list[str] = []
    binary_outputs: dict[str | None, bool] = {None: default_binary}
    for o in req.get("outputs") or []:
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise ProtocolError("Each of 'outputs' needs a 'name'.")
        outputs.append(o["name"])
        op = o.get("parameters") or {}
        binary_outputs[o["name"]] = bool(op.get("binary_data", default_binary))
    timeout = params.get("timeout") if isinstance(params, dict) else None
    timeout_ms = float(timeout) / 1e3 if isinstance(timeout, (int, float)) and timeout > 0 else None
    rid = req.get("id", "")
    return DecodedRequest(
        str(rid) if rid is not None else "", inputs, outputs, binary_outputs, timeout_ms
    )


def _json_data(arr: np.ndarray) -> list[Any]:
    """Flattened values; NaN/Inf become ``null`` (JSON has no such numbers)."""
    flat = arr.reshape(-1)
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        return [None if not math.isfinite(v) else v for v in flat.tolist()]
    return list(flat.tolist())


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: Sequence[tuple[str, np.ndarray]],
    binary_outputs: dict[str | None, bool],
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """The body of an infer response and, when binary tensors follow, the JSON's length.

    Args:
        model_name: The model's name.
        model_version: Its version string.
        request_id: The request's id ("" for none).
        outputs: ``(name, array)`` pairs to send.
        binary_outputs: Per output name (``None``: the default) whether to send raw bytes.
        parameters: Extra response parameters (the variant that answered, cache hit ...).
    """
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    default = binary_outputs.get(None, False)
    for name, arr in outputs:
        entry: dict[str, Any] = {
            "name": name,
            "datatype": numpy_to_v2(arr.dtype),
            "shape": list(arr.shape),
        }
        if binary_outputs.get(name, default):
            raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = _json_data(arr)
        entries.append(entry)
    resp: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id:
        resp["id"] = request_id
    if parameters:
        resp["parameters"] = parameters
    resp["outputs"] = entries
    head = json.dumps(resp, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
