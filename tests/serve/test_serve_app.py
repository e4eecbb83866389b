"""The server end to end, on a real trained model (``torchslim:fashion_cnn``) and real
Fashion-MNIST images, over real HTTP on a free loopback port."""

from __future__ import annotations

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _client import Reply, logits, metric, predict_json, request

from torchslim.serve.config import ServeConfig

ATOL = 1e-4  # a row computed inside a batch vs alone (ONNX Runtime kernels may differ in order)


def cfg(artifact: Path, **kw: Any) -> ServeConfig:
    base: dict[str, Any] = {"port": 0, "max_batch": 8, "warmup_repeats": 1}
    base.update(kw)
    return ServeConfig(str(artifact), **base)


def slow(seconds: float, role: str = "primary") -> Any:
    """Patch: every model call of ``role`` also sleeps (a model slower than the traffic)."""

    def patch(server: Any) -> None:
        b = server.variants[role].batcher
        run = b.run_batch

        def slowed(inputs: Any) -> Any:
            time.sleep(seconds)
            return run(inputs)

        b.run_batch = slowed

    return patch


def parallel(n: int, fn: Any) -> list[Any]:
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(fn, i) for i in range(n)]
        return [f.result(timeout=60) for f in futures]


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    artifacts: dict[str, Path], images: np.ndarray, direct: Any, start_server: Any
) -> None:
    srv = start_server(cfg(artifacts["ort"], max_wait_ms=5000, p99_target_ms=None))
    replies = parallel(8, lambda i: predict_json(srv.url, images[i]))
    for i, r in enumerate(replies):
        assert r.status == 200, r.body
        want = direct(images[i : i + 1])
        np.testing.assert_allclose(logits(r), want, atol=ATOL)
        assert r.json()["predictions"] == [int(want.argmax())]
    calls = metric(srv.url, "torchslim_batch_size_count", variant="primary")
    singles = metric(srv.url, "torchslim_batch_size_bucket", variant="primary", le="1.0")
    assert calls < 8 and singles < calls + (8 - calls)  # fewer model calls than requests
    assert metric(srv.url, "torchslim_batch_size_sum", variant="primary") == 8
    assert metric(srv.url, "torchslim_batch_release_total", variant="primary", reason="full") >= 1


def test_bad_input_is_refused_with_422_saying_what_was_expected(
    artifacts: dict[str, Path], images: np.ndarray, start_server: Any
) -> None:
    srv = start_server(cfg(artifacts["ort"], max_body_mb=0.1))
    r = predict_json(srv.url, np.zeros((1, 1, 27, 28), np.float32))
    assert r.status == 422 and "axis 2 must be 28" in r.json()["error"] and r.json()["hint"]
    nan = json.dumps({"inputs": [[[[float("nan")] * 28] * 28]]}).encode()
    r = request(srv.url, "POST", "/v1/predict", nan, {"Content-Type": "application/json"})
    assert r.status == 422 and "NaN" in r.json()["error"]
    buf = io.BytesIO()
    np.save(buf, (images[:1] * 255).astype(np.int64))
    r = request(
        srv.url, "POST", "/v1/predict", buf.getvalue(), {"Content-Type": "application/x-npy"}
    )
    assert r.status == 422 and "int64" in r.json()["error"] and "float32" in r.json()["error"]
    v2 = {
        "inputs": [
            {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP64", "data": [0.0] * 784}
        ]
    }
    r = request(srv.url, "POST", "/v2/models/cnn-ort/infer", json.dumps(v2).encode())
    assert r.status == 422 and "float64" in r.json()["error"]
    assert request(srv.url, "POST", "/v2/models/nope/infer", json.dumps(v2).encode()).status == 404
    noise = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    big = predict_json(srv.url, noise)  # ~125 kB as JSON, over 0.1 MB
    assert big.status == 413
    assert metric(srv.url, "torchslim_errors_total", kind="bad_input") >= 4


def test_a_pickled_npy_body_is_refused_and_a_plain_one_served(
    artifacts: dict[str, Path], images: np.ndarray, direct: Any, start_server: Any
) -> None:
    srv = start_server(cfg(artifacts["ort"]))
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    r = request(
        srv.url, "POST", "/v1/predict", buf.getvalue(), {"Content-Type": "application/x-npy"}
    )
    assert r.status == 422 and "unpickling" in r.json()["error"]
    buf = io.BytesIO()
    np.save(buf, images[:3])
    r = request(
        srv.url, "POST", "/v1/predict", buf.getvalue(), {"Content-Type": "application/x-npy"}
    )
    assert r.status == 200
    np.testing.assert_allclose(logits(r), direct(images[:3]), atol=ATOL)


def test_an_uploaded_image_is_preprocessed_like_the_training_data(
    artifacts: dict[str, Path], images: np.ndarray, direct: Any, start_server: Any
) -> None:
    from PIL import Image

    srv = start_server(cfg(artifacts["ort"]))
    png = io.BytesIO()
    Image.fromarray(np.round(images[5, 0] * 255).astype(np.uint8), mode="L").save(png, format="PNG")
    boundary = "torchslimtestboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    r = request(srv.url, "POST", "/v1/predict", body, headers)
    assert r.status == 200, r.body
    np.testing.assert_allclose(logits(r), direct(images[5:6]), atol=1e-3)
    raw = request(srv.url, "POST", "/v1/predict", png.getvalue(), {"Content-Type": "image/png"})
    assert raw.status == 200 and raw.json()["predictions"] == r.json()["predictions"]
    junk = request(srv.url, "POST", "/v1/predict", b"not an image", {"Content-Type": "image/png"})
    assert junk.status == 422


def test_a_repeated_request_hits_the_cache(
    artifacts: dict[str, Path], images: np.ndarray, start_server: Any
) -> None:
    srv = start_server(cfg(artifacts["ort"], cache_size=4))
    first, second = predict_json(srv.url, images[0]), predict_json(srv.url, images[0])
    other = predict_json(srv.url, images[1])
    assert [r.headers["x-torchslim-cache"] for r in (first, second, other)] == [
        "miss",
        "hit",
        "miss",
    ]
    assert first.json()["outputs"] == second.json()["outputs"]
    assert metric(srv.url, "torchslim_cache_hits_total") == 1
    assert metric(srv.url, "torchslim_batch_size_sum") == 2  # the hit never reached the model


def test_with_an_api_key_requests_without_it_get_401(
    artifacts: dict[str, Path], images: np.ndarray, start_server: Any
) -> None:
    srv = start_server(cfg(artifacts["ort"], api_key="s3cret"))
    none = predict_json(srv.url, images[0])
    wrong = predict_json(srv.url, images[0], {"Authorization": "Bearer nope"})
    right = predict_json(srv.url, images[0], {"Authorization": "Bearer s3cret"})
    assert none.status == 401 and none.headers["www-authenticate"] == "Bearer"
    assert wrong.status == 401 and right.status == 200
    assert request(srv.url, "GET", "/metrics").status == 401
    assert request(srv.url, "GET", "/v2/health/ready").status == 200  # probes stay open


def test_not_ready_until_warm_up_ends(
    artifacts: dict[str, Path], images: np.ndarray, start_server: Any
) -> None:
    import tritonclient.http as tc

    gate = threading.Event()
    srv = start_server(cfg(artifacts["ort"]), ready=False, warmup_gate=gate)
    client = tc.InferenceServerClient(srv.url.removeprefix("http://"))
    assert client.is_server_live() and not client.is_server_ready()
    r = request(srv.url, "GET", "/v2/health/ready")
    assert r.status == 400 and r.json() == {"ready": False, "reason": "warming up"}
    early = predict_json(srv.url, images[0])
    assert early.status == 503 and int(early.headers["retry-after"]) >= 1
    gate.set()
    srv.wait_ready()
    assert client.is_server_ready() and predict_json(srv.url, images[0]).status == 200


def test_tritonclient_round_trips_binary_and_json_tensors(
    artifacts: dict[str, Path], images: np.ndarray, direct: Any, start_server: Any
) -> None:
    import tritonclient.http as tc
    from tritonclient.utils import InferenceServerException

    srv = start_server(cfg(artifacts["ort"]))
    client = tc.InferenceServerClient(srv.url.removeprefix("http://"))
    meta = client.get_model_metadata("cnn-ort")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
    x = images[:4]
    for binary in (True, False):
        inp = tc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = tc.InferRequestedOutput("output", binary_data=binary)
        res = client.infer("cnn-ort", [inp], outputs=[out], request_id="r7")
        np.testing.assert_allclose(res.as_numpy("output"), direct(x), atol=ATOL)
        assert res.get_response()["id"] == "r7"
    bad = tc.InferInput("input", [1, 1, 28, 27], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 1, 28, 27), np.float32))
    with pytest.raises(InferenceServerException, match="axis 3 must be 28"):
        client.infer("cnn-ort", [bad])


def test_overload_is_refused_with_503_and_nothing_hangs(
    artifacts: dict[str, Path], images: np.ndarray, start_server: Any
) -> None:
    full = start_server(cfg(artifacts["ort"], max_batch=1, queue_size=2), patch=slow(0.05))
    replies: list[Reply] = parallel(24, lambda i: predict_json(full.url, images[i], timeout=20))
    codes = sorted({r.status for r in replies})
    assert codes == [200, 503]
    assert all(int(r.headers["retry-after"]) >= 1 for r in replies if r.status == 503)
    assert metric(full.url, "torchslim_rejections_total", reason="queue_full") >= 1

    late = start_server(
        cfg(artifacts["ort"], max_batch=1, queue_size=100, timeout_ms=150), patch=slow(0.05)
    )
    replies = parallel(16, lambda i: predict_json(late.url, images[i], timeout=20))
    assert {r.status for r in replies} <= {200, 503} and any(r.status == 503 for r in replies)
    assert metric(late.url, "torchslim_rejections_total", reason="deadline") >= 1


def test_shutdown_under_load_loses_no_accepted_request(
    artifacts: dict[str, Path], images: np.ndarray, direct: Any, start_server: Any
) -> None:
    srv = start_server(
        cfg(artifacts["ort"], max_batch=4, max_wait_ms=0, p99_target_ms=None), patch=slow(0.03)
    )
    want = direct(images[:24]).argmax(1)
    outcomes: list[Any] = [None] * 24

    def client(i: int) -> None:
        time.sleep(0.005 * i)
        try:
            outcomes[i] = predict_json(srv.url, images[i], timeout=30)
        except OSError as exc:  # refused or reset: the server never accepted it
            outcomes[i] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    time.sleep(0.06)
    assert srv.stop(timeout=30)
    for t in threads:
        t.join(30)
    served = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, Reply)]
    assert all(o.status == 200 for _, o in served), [o.status for _, o in served]
    assert all(o.json()["predictions"] == [int(want[i])] for i, o in served)
    batcher = srv.server.variants["primary"].batcher
    assert batcher.admitted == batcher.completed == len(served) > 0


def test_shadow_never_changes_a_response(
    artifacts: dict[str, Path], images: np.ndarray, direct: Any, start_server: Any
) -> None:
    def disagree(server: Any) -> None:  # a bad candidate: its logits are negated
        b = server.variants["shadow"].batcher
        run = b.run_batch
        b.run_batch = lambda inputs: [-o for o in run(inputs)]

    srv = start_server(cfg(artifacts["ort"], shadow=str(artifacts["eager"])), patch=disagree)
    for i in range(12):
        r = predict_json(srv.url, images[i])
        assert r.status == 200 and r.headers["x-torchslim-variant"] == "primary"
        np.testing.assert_allclose(logits(r), direct(images[i : i + 1]), atol=ATOL)
    end = time.monotonic() + 10
    while srv.server.shadow_stats.summary()["compared_rows"] < 12 and time.monotonic() < end:
        time.sleep(0.01)
    report = request(srv.url, "GET", "/v1/compare").json()
    shadow = report["shadow"]
    assert shadow["compared_rows"] == 12 and shadow["cosine_mean"] < -0.9
    assert shadow["top1_agreement"] < 0.5
    lo, hi = shadow["top1_agreement_ci95"]
    assert lo <= shadow["top1_agreement"] <= hi
    assert report["variants"]["primary"]["latency_ms"]["n"] == 12


def test_shadow_of_the_same_model_agrees(
    artifacts: dict[str, Path], images: np.ndarray, start_server: Any
) -> None:
    srv = start_server(cfg(artifacts["ort"], shadow=str(artifacts["eager"])))
    for i in range(10):
        assert predict_json(srv.url, images[i]).status == 200
    end = time.monotonic() + 10
    while srv.server.shadow_stats.summary()["compared_rows"] < 10 and time.monotonic() < end:
        time.sleep(0.01)
    shadow = request(srv.url, "GET", "/v1/compare").json()["shadow"]
    assert shadow["top1_agreement"] == 1.0 and shadow["cosine_min"] > 0.9999
    lo, hi = shadow["top1_agreement_ci95"]
    assert 0.6 < lo < 1.0 == hi
    assert shadow["latency_ms"]["n"] == 10


def test_canary_split_routes_to_both_with_per_variant_metrics(
    artifacts: dict[str, Path], images: np.ndarray, direct: Any, start_server: Any
) -> None:
    srv = start_server(cfg(artifacts["ort"], canary=str(artifacts["eager"]), split=(90, 10)))
    replies = [predict_json(srv.url, images[i]) for i in range(20)]
    variants = [r.headers["x-torchslim-variant"] for r in replies]
    assert variants.count("canary") == 2 and variants.count("primary") == 18
    for i, r in enumerate(replies):
        np.testing.assert_allclose(logits(r), direct(images[i : i + 1]), atol=1e-3)
    report = request(srv.url, "GET", "/v1/compare").json()
    assert report["variants"]["canary"]["requests"] == 2
    assert report["split"] == {"primary": 0.9, "canary": 0.1}
    assert metric(srv.url, "torchslim_requests_total", variant="canary", status="200") == 2


def test_the_server_answers_while_the_model_runs(
    artifacts: dict[str, Path], images: np.ndarray, start_server: Any
) -> None:
    srv = start_server(cfg(artifacts["ort"], max_batch=1), patch=slow(0.5))
    done = threading.Event()
    thread = threading.Thread(target=lambda: (predict_json(srv.url, images[0]), done.set()))
    thread.start()
    end = time.monotonic() + 5
    while srv.server.variants["primary"].batcher._running_rows == 0 and time.monotonic() < end:
        time.sleep(0.005)
    assert request(srv.url, "GET", "/v2/health/live").status == 200
    assert request(srv.url, "GET", "/v1/stats").json()["variants"]["primary"]["admitted"] == 1
    assert not done.is_set()  # the model call is still running in its worker thread
    thread.join(10)
    assert done.is_set()


def test_an_artifact_with_a_fixed_batch_is_padded_and_chunked(
    artifacts: dict[str, Path], images: np.ndarray, direct: Any
) -> None:
    from torchslim.serve.model import ServedModel

    model = ServedModel(artifacts["ort"])
    model.static_batch = 4  # as a program exported for batch 4 only records
    model.load()
    runner, seen = model._runner, []
    model._runner = lambda x: (seen.append(tuple(x.shape)), runner(x))[1]
    out = model.run((images[:6],))[0]
    assert seen == [(4, 1, 28, 28), (4, 1, 28, 28)] and out.shape == (6, 10)
    np.testing.assert_allclose(out, direct(images[:6]), atol=ATOL)
