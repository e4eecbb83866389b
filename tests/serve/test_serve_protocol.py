"""Open Inference Protocol payloads: JSON and binary tensors decoded exactly, bad ones refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from torchslim.errors import ShapeError
from torchslim.serve.protocol import ProtocolError, decode_infer_request, encode_infer_response


def binary_request(arrays: dict[str, np.ndarray], **params: object) -> tuple[bytes, int]:
    head = {
        "inputs": [
            {
                "name": n,
                "shape": list(a.shape),
                "datatype": {"float32": "FP32", "int64": "INT64"}[a.dtype.name],
                "parameters": {"binary_data_size": a.nbytes},
            }
            for n, a in arrays.items()
        ],
        "parameters": params,
    }
    js = json.dumps(head).encode()
    return js + b"".join(a.tobytes() for a in arrays.values()), len(js)


def test_binary_and_json_tensors_decode_to_the_same_arrays() -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    ids = np.array([[1, 2, 3]], dtype=np.int64)
    body, n = binary_request({"x": x, "ids": ids}, binary_data_output=True, timeout=250_000)
    req = decode_infer_request(body, n)
    assert np.array_equal(req.inputs["x"], x) and np.array_equal(req.inputs["ids"], ids)
    assert req.binary_outputs[None] is True and req.timeout_ms == pytest.approx(250.0)
    js = {
        "inputs": [
            {"name": "x", "shape": [2, 3, 4], "datatype": "FP32", "data": x.ravel().tolist()}
        ]
    }
    assert np.array_equal(decode_infer_request(json.dumps(js).encode(), None).inputs["x"], x)


def test_sizes_that_do_not_add_up_are_refused_with_what_was_expected() -> None:
    x = np.zeros((1, 4), np.float32)
    body, n = binary_request({"x": x})
    with pytest.raises(ProtocolError, match="not claimed"):
        decode_infer_request(body + b"\0\0", n)
    with pytest.raises(ProtocolError, match="runs past"):
        decode_infer_request(body[:-4], n)
    bad = {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [0.0] * 4}]}
    with pytest.raises(ShapeError, match="do not fill shape"):
        decode_infer_request(json.dumps(bad).encode(), None)
    odd = {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}
    with pytest.raises(ShapeError, match="BYTES"):
        decode_infer_request(json.dumps(odd).encode(), None)
    with pytest.raises(ProtocolError, match="JSON"):
        decode_infer_request(b"{not json", None)


def test_response_binary_part_follows_the_json_and_nan_becomes_null() -> None:
    y = np.array([[0.5, np.nan]], dtype=np.float32)
    body, n = encode_infer_response("m", "1", "r1", [("output", y)], {None: True})
    assert n is not None
    head = json.loads(body[:n])
    assert head["id"] == "r1" and head["outputs"][0]["parameters"]["binary_data_size"] == 8
    assert np.array_equal(np.frombuffer(body[n:], np.float32).reshape(1, 2), y, equal_nan=True)
    body, n = encode_infer_response("m", "1", "", [("output", y)], {None: False})
    assert n is None and json.loads(body)["outputs"][0]["data"] == [0.5, None]
