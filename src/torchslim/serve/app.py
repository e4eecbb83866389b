"""The HTTP server: FastAPI routes over the batched variants.

Endpoints (all but the health probes need ``Authorization: Bearer KEY`` when a key is set):

=========================================  =============================================================
``GET  /v2/health/live``                   200 while the process runs
``GET  /v2/health/ready``                  200 once warm-up ended (400 before, as the protocol says)
``GET  /v2``                               server metadata (protocol extensions)
``GET  /v2/models/{name}[/versions/1]``    model metadata: inputs, outputs, datatypes, shapes
``GET  /v2/models/{name}/ready``           200 when that model is ready
``POST /v2/models/{name}[/versions/1]/infer``  Open Inference Protocol infer (JSON and binary tensors)
``POST /v1/predict``                       JSON arrays, ``.npy`` bodies or an uploaded image
``GET  /v1/compare``                       canary/shadow evidence: latency percentiles, agreement
``GET  /v1/stats``                         batcher state: policy, measured service times, plan
``GET  /metrics``                          Prometheus
=========================================  =============================================================

Status codes: 400 malformed request, 401 missing/wrong token, 404 unknown model, 413 body too
large, 422 wrong input names/shape/dtype/NaN (a message saying what was expected), 503 refused
(warming up, queue full, deadline cannot be met, draining; with ``Retry-After``), 504 the model ran
past the deadline, 500 the model failed. Errors are ``{"error": ..., "hint": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import json
import math
import os
import threading
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from torchslim._io import MB
from torchslim.errors import ShapeError, TorchslimError
from torchslim.serve.batcher import Batcher, BatchPolicy, Rejected
from torchslim.serve.cache import ResponseCache, cache_key
from torchslim.serve.config import ServeConfig
from torchslim.serve.metrics import ServerMetrics
from torchslim.serve.model import ServedModel
from torchslim.serve.protocol import (
    HEADER_LENGTH,
    ProtocolError,
    decode_infer_request,
    encode_infer_response,
    numpy_to_v2,
)
from torchslim.serve.variants import LatencyLog, ShadowStats, SplitRouter, compare_report

__all__ = ["HTTPError", "InferenceServer"]

_NPY_MAGIC = b"\x93NUMPY"
_GRACE_S = 0.25  # past a deadline, how long a handler still waits for a batch already running


class HTTPError(Exception):
    """An error answered with ``status`` and ``{"error", "hint"}``."""

    def __init__(
        self,
        status: int,
        message: str,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.hint = hint
        self.headers = headers or {}


@dataclass
class _Variant:
    name: str
    model: ServedModel
    batcher: Batcher
    latency: LatencyLog


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, min(60, math.ceil(seconds))))}


def _finite_nested(arr: np.ndarray) -> Any:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        obj = arr.astype(object)
        obj[~np.isfinite(arr)] = None
        return obj.tolist()
    return arr.tolist()


class InferenceServer:
    """Variants (primary, canary or shadow), each a model behind its own batcher, and the app.

    Args:
        config: The settings.
        warmup_gate: When given, warm-up waits for this event before it starts (orchestration
            and tests: the server stays not-ready until it is set).
        ready_before_serving: The app's startup waits until warm-up ended (and fails if it
            failed), so the app takes no request before it is ready. For hosts that start routing
            to an app once its startup returns (a Ray Serve replica); a plain server listens at
            once and answers ``/v2/health/ready`` 503 until ready.
    """

    def __init__(
        self,
        config: ServeConfig,
        *,
        warmup_gate: threading.Event | None = None,
        ready_before_serving: bool = False,
    ) -> None:
        self.config = config
        self._ready_first = ready_before_serving
        self.metrics = ServerMetrics()
        self._gate = warmup_gate
        self.variants: dict[str, _Variant] = {}
        self._add("primary", config.artifact, config.name)
        self.name = self.variants["primary"].model.name
        self.router: SplitRouter | None = None
        if config.canary:
            self._add("canary", config.canary, self.name)
            self.router = SplitRouter({"primary": config.split[0], "canary": config.split[1]})
        self.shadow_stats: ShadowStats | None = None
        if config.shadow:
            self._add("shadow", config.shadow, self.name)
            self.shadow_stats = ShadowStats()
        self.cache = ResponseCache(config.cache_size, config.cache_mb)
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self.app = self._build_app()

    # --------------------------------------------------------------------------------------------
    # Variants and life cycle
    # --------------------------------------------------------------------------------------------

    def describe(self, host: str, port: int) -> dict[str, Any]:
        """What the server is and where to reach it (printed once it listens)."""
        url = f"http://{host}:{port}"
        return {
            "url": url,
            "model": self.name,
            "runtime": self.variants["primary"].model.runtime,
            "variants": {k: str(v.model.path) for k, v in self.variants.items()},
            "infer": f"{url}/v2/models/{self.name}/infer",
            "predict": f"{url}/v1/predict",
            "metrics": f"{url}/metrics",
            "batching": self.variants["primary"].batcher.policy.mode,
            "max_batch": self.config.max_batch,
            "auth": self.config.api_key is not None,
            "workers": self.config.workers,
        }

    @staticmethod
    def _answer_headers(variant: str, hit: bool) -> dict[str, str]:
        # the worker's pid: with --workers N, which process answered (its /metrics are its own)
        return {
            "X-Torchslim-Variant": variant,
            "X-Torchslim-Cache": "hit" if hit else "miss",
            "X-Torchslim-Worker": str(os.getpid()),
        }

    def _add(self, role: str, path: str, name: str | None) -> None:
        cfg = self.config
        model = ServedModel(path, name=name, verify=cfg.verify)
        preferred = (
            cfg.preferred_batch_sizes
            if cfg.preferred_batch_sizes is not None
            else model.preferred_batch_sizes
        )
        policy = BatchPolicy(
            max_batch=cfg.max_batch,
            max_wait_ms=cfg.max_wait_ms,
            p99_target_ms=cfg.p99_target_ms,
            queue_size=cfg.queue_size,
            preferred_batch_sizes=tuple(b for b in preferred if b <= cfg.max_batch),
        )
        rejections = self.metrics.rejections

        def warm(batcher: Batcher) -> None:
            if self._gate is not None:
                self._gate.wait()
            model.load()
            batcher.measure(batcher._sizes(), model.example_batch, repeats=cfg.warmup_repeats)

        batcher = Batcher(
            model.run,
            policy,
            name=role,
            observer=self.metrics.batch_observer(role),
            on_reject=lambda reason: rejections.labels(role, reason).inc(),
            warmup=warm,
        )
        self.variants[role] = _Variant(role, model, batcher, LatencyLog())

    def start(self) -> None:
        """Start every variant's worker (warm-up runs there; ready when all have warmed up)."""
        if not self._started:
            self._started = True
            for v in self.variants.values():
                v.batcher.start()

    @property
    def ready(self) -> bool:
        """Whether every variant (the shadow too, so it sees traffic from the start) warmed up."""
        return all(v.batcher.ready for v in self.variants.values())

    async def _until_ready(self) -> None:
        while not self.ready:
            for v in self.variants.values():
                if v.batcher.warmup_error is not None:
                    raise TorchslimError(
                        f"Warm-up of '{v.model.name}' failed: {v.batcher.warmup_error}",
                        "Check the artifact with `torchslim bench` on this machine.",
                    )
            await asyncio.sleep(0.05)

    async def drain(self) -> None:
        """Finish mirrored shadow requests, then every queued request, then stop the workers."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.config.timeout_ms / 1e3 + 1)
        timeout = self.config.timeout_ms / 1e3 + 5
        for v in self.variants.values():
            await asyncio.to_thread(v.batcher.stop, timeout)

    # --------------------------------------------------------------------------------------------
    # The app
    # --------------------------------------------------------------------------------------------

    def _build_app(self) -> Any:
        from fastapi import FastAPI, Request
        from fastapi.responses import Response

        @contextlib.asynccontextmanager
        async def lifespan(_: Any) -> AsyncIterator[None]:
            self.start()
            if self._ready_first:
                await self._until_ready()
            try:
                yield
            finally:
                await self.drain()

        app = FastAPI(
            title="torchslim serve",
            description="Open Inference Protocol (KServe v2) server over a torchslim artifact.",
            lifespan=lifespan,
            docs_url=None,
            redoc_url=None,
            openapi_url=None,
        )

        def wrap(fn: Any, *, auth: bool = True, route: str = "") -> Any:
            async def endpoint(request: Request) -> Response:
                t0 = time.perf_counter()
                variant = "primary"
                try:
                    if auth:
                        self._check_auth(request)
                    result = await fn(request)
                    if isinstance(result, tuple):
                        response, variant = result
                    else:
                        response = result
                except HTTPError as exc:
                    response = self._error(exc)
                except ShapeError as exc:
                    self.metrics.errors.labels(variant, "bad_input").inc()
                    response = self._error(HTTPError(422, exc.message, exc.hint))
                except ProtocolError as exc:
                    self.metrics.errors.labels(variant, "bad_request").inc()
                    response = self._error(HTTPError(400, exc.message, exc.hint))
                except TorchslimError as exc:
                    self.metrics.errors.labels(variant, "bad_input").inc()
                    response = self._error(HTTPError(422, exc.message, exc.hint))
                except Exception as exc:  # a bug: answer it, count it, keep serving
                    self.metrics.errors.labels(variant, "internal").inc()
                    response = self._error(
                        HTTPError(500, f"internal error: {type(exc).__name__}: {str(exc)[:200]}")
                    )
                if route:
                    self.metrics.requests.labels(variant, route, str(response.status_code)).inc()
                    self.metrics.latency.labels(variant).observe(time.perf_counter() - t0)
                return response

            endpoint.__name__ = getattr(fn, "__name__", "endpoint")
            endpoint.__annotations__ = {"request": Request, "return": Response}
            return endpoint

        add = app.add_api_route
        add("/v2/health/live", wrap(self._live, auth=False), methods=["GET"])
        add("/v2/health/ready", wrap(self._ready, auth=False), methods=["GET"])
        add("/v2", wrap(self._server_metadata), methods=["GET"])
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            add(prefix, wrap(self._model_metadata), methods=["GET"])
            add(prefix + "/ready", wrap(self._model_ready, auth=False), methods=["GET"])
            add(prefix + "/infer", wrap(self._v2_infer, route="v2_infer"), methods=["POST"])
        add("/v1/predict", wrap(self._v1_predict, route="v1_predict"), methods=["POST"])
        add("/v1/compare", wrap(self._compare), methods=["GET"])
        add("/v1/stats", wrap(self._stats), methods=["GET"])
        add("/metrics", wrap(self._metrics), methods=["GET"])
        return app

    # --------------------------------------------------------------------------------------------
    # Helpers
    # --------------------------------------------------------------------------------------------

    @staticmethod
    def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
        from fastapi.responses import Response

        body = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    def _error(self, exc: HTTPError) -> Any:
        body: dict[str, Any] = {"error": exc.message}
        if exc.hint:
            body["hint"] = exc.hint
        return self._json(body, exc.status, exc.headers)

    def _check_auth(self, request: Any) -> None:
        key = self.config.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), key.encode()
        ):
            raise HTTPError(
                401,
                "Missing or wrong bearer token.",
                "Send the header 'Authorization: Bearer <key>' with the server's --api-key.",
                {"WWW-Authenticate": "Bearer"},
            )

    async def _body(self, request: Any) -> bytes:
        limit = int(self.config.max_body_mb * MB)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise self._too_big()
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise self._too_big()
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "").lower()
        if encoding in ("gzip", "deflate"):
            d = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
            try:
                body = d.decompress(body, limit + 1)
            except zlib.error:
                raise HTTPError(400, f"The body is not valid {encoding} data.") from None
            if len(body) > limit or d.unconsumed_tail:
                raise self._too_big()
        request._body = body  # so request.form() can parse it again
        return body

    def _too_big(self) -> HTTPError:
        return HTTPError(
            413,
            f"The request body is larger than {self.config.max_body_mb:g} MB.",
            "Send smaller batches, or start the server with a larger --max-body-mb.",
        )

    def _check_model(self, name: str) -> None:
        if name != self.name:
            raise HTTPError(
                404,
                f"Unknown model '{name}'.",
                f"This server serves '{self.name}' (GET /v2/models/{self.name}).",
            )

    def _route(self) -> _Variant:
        if not self.ready:
            self.metrics.rejections.labels("primary", "not_ready").inc()
            raise HTTPError(
                503,
                "The model is still warming up.",
                "Retry shortly (GET /v2/health/ready).",
                _retry_after(1),
            )
        return self.variants[self.router.next() if self.router is not None else "primary"]

    async def _run(
        self, v: _Variant, inputs: tuple[np.ndarray, ...], timeout_ms: float | None
    ) -> tuple[list[np.ndarray], bool]:
        """Run through the cache and the batcher; ``(outputs, cache_hit)``."""
        rows = int(inputs[0].shape[0])
        if rows > v.batcher.policy.max_batch:
            raise ShapeError(
                f"The request has {rows} rows; this server runs at most {v.batcher.policy.max_batch} per call.",
                "Split the request, or start the server with a larger --max-batch.",
            )
        key = None
        if self.cache.enabled:
            key = cache_key(v.model.model_hash, inputs)
            hit = self.cache.get(key)
            if hit is not None:
                self.metrics.cache_hits.labels(v.name).inc()
                return hit, True
            self.metrics.cache_misses.labels(v.name).inc()
        timeout_s = min(self.config.timeout_ms, timeout_ms or math.inf) / 1e3
        now = time.perf_counter()
        deadline = now + timeout_s
        try:
            fut = v.batcher.submit(inputs, deadline)
        except Rejected as exc:
            raise HTTPError(
                503,
                exc.message,
                "Retry after the time in Retry-After.",
                _retry_after(exc.retry_after_s),
            ) from None
        try:
            outputs = await asyncio.wait_for(asyncio.wrap_future(fut), timeout_s + _GRACE_S)
        except asyncio.TimeoutError:
            if fut.cancelled():
                self.metrics.rejections.labels(v.name, "deadline").inc()
                raise HTTPError(
                    503,
                    "The request's deadline passed while it was queued.",
                    "Retry later.",
                    _retry_after(1),
                ) from None
            self.metrics.errors.labels(v.name, "timeout").inc()
            raise HTTPError(
                504, f"The model did not answer within {timeout_s * 1e3:.0f} ms."
            ) from None
        except Rejected as exc:
            raise HTTPError(
                503, exc.message, "Retry later.", _retry_after(exc.retry_after_s)
            ) from None
        except ShapeError:
            raise
        except Exception as exc:
            self.metrics.errors.labels(v.name, "model").inc()
            raise HTTPError(
                500,
                f"The model failed: {type(exc).__name__}: {str(exc)[:300]}",
                "Check the inputs and the server log.",
            ) from None
        if key is not None:
            self.cache.put(key, outputs)
        return outputs, False

    async def _infer(
        self, arrays: Any, *, exact_dtype: bool, add_batch: bool, timeout_ms: float | None = None
    ) -> tuple[_Variant, list[np.ndarray], bool]:
        t0 = time.perf_counter()
        v = self._route()
        inputs = v.model.check_inputs(arrays, exact_dtype=exact_dtype, add_batch=add_batch)
        outputs, hit = await self._run(v, inputs, timeout_ms)
        v.latency.add((time.perf_counter() - t0) * 1e3)
        if self.shadow_stats is not None and v.name == "primary":
            task = asyncio.get_running_loop().create_task(self._mirror(inputs, outputs))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return v, outputs, hit

    async def _mirror(self, inputs: tuple[np.ndarray, ...], primary: list[np.ndarray]) -> None:
        """Send a copy to the shadow; record its latency and agreement. Never raises."""
        stats = self.shadow_stats
        assert stats is not None
        v = self.variants["shadow"]
        t0 = time.perf_counter()
        try:
            shadow_inputs = v.model.check_inputs(inputs)
            fut = v.batcher.submit(shadow_inputs, t0 + self.config.timeout_ms / 1e3)
        except (Rejected, TorchslimError):
            stats.dropped += 1
            return
        try:
            outputs = await asyncio.wait_for(
                asyncio.wrap_future(fut), self.config.timeout_ms / 1e3 + _GRACE_S
            )
        except Exception:
            stats.failed += 1
            return
        stats.latency.add((time.perf_counter() - t0) * 1e3)
        v.latency.add((time.perf_counter() - t0) * 1e3)
        agreement = stats.record(primary, outputs)
        if agreement is not None:
            self.metrics.agreement.labels("shadow").set(agreement)

    # --------------------------------------------------------------------------------------------
    # Routes
    # --------------------------------------------------------------------------------------------

    async def _live(self, request: Any) -> Any:
        return self._json({"live": True})

    async def _ready(self, request: Any) -> Any:
        ready = self.ready
        body: dict[str, Any] = {"ready": ready}
        if not ready:
            errors = [
                str(v.batcher.warmup_error)
                for v in self.variants.values()
                if v.batcher.warmup_error
            ]
            body["reason"] = f"warm-up failed: {errors[0]}" if errors else "warming up"
        return self._json(body, 200 if ready else 400)

    async def _server_metadata(self, request: Any) -> Any:
        from torchslim._version import __version__

        return self._json(
            {"name": "torchslim", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    async def _model_metadata(self, request: Any) -> Any:
        self._check_model(request.path_params["name"])
        m = self.variants["primary"].model
        return self._json(
            {
                "name": m.name,
                "versions": [m.version],
                "platform": f"torchslim_{m.runtime}",
                "inputs": m.input_metadata(),
                "outputs": m.output_metadata(),
                "parameters": {
                    "artifact": str(m.path),
                    "source": m.artifact.source,
                    "task": m.task,
                    "image_preprocessing": m.preprocessing_description(),
                    "variants": sorted(self.variants),
                    "max_batch": self.config.max_batch,
                },
            }
        )

    async def _model_ready(self, request: Any) -> Any:
        self._check_model(request.path_params["name"])
        return self._json({"name": self.name, "ready": self.ready}, 200 if self.ready else 400)

    async def _v2_infer(self, request: Any) -> Any:
        from fastapi.responses import Response

        self._check_model(request.path_params["name"])
        body = await self._body(request)
        hl = request.headers.get(HEADER_LENGTH.lower())
        try:
            header_length = int(hl) if hl is not None else None
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} is not a number.") from None
        req = decode_infer_request(body, header_length)
        v, outputs, hit = await self._infer(
            req.inputs, exact_dtype=True, add_batch=False, timeout_ms=req.timeout_ms
        )
        names = [o.name for o in v.model.outputs] or [f"output_{i}" for i in range(len(outputs))]
        pairs = list(zip(names, outputs, strict=False))
        if req.outputs:
            known = dict(pairs)
            missing = [n for n in req.outputs if n not in known]
            if missing:
                raise ShapeError(
                    f"Unknown outputs {missing}.", f"This model's outputs: {', '.join(names)}."
                )
            pairs = [(n, known[n]) for n in req.outputs]
        data, json_len = encode_infer_response(
            v.model.name,
            v.model.version,
            req.id,
            pairs,
            req.binary_outputs,
            {"variant": v.name, "cached": hit},
        )
        headers = self._answer_headers(v.name, hit)
        if json_len is not None:
            headers[HEADER_LENGTH] = str(json_len)
            return Response(data, media_type="application/octet-stream", headers=headers), v.name
        return Response(data, media_type="application/json", headers=headers), v.name

    async def _v1_predict(self, request: Any) -> Any:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await self._body(request)
        model = self.variants["primary"].model
        arrays: Any
        exact = False
        if ctype == "multipart/form-data":
            form = await request.form(max_part_size=int(self.config.max_body_mb * MB))
            upload = form.get("file") or next(
                (f for f in form.values() if hasattr(f, "read")), None
            )
            if upload is None or not hasattr(upload, "read"):
                raise ShapeError(
                    "The form has no file.", "Upload the image as the form field 'file'."
                )
            arrays = (model.image_input(await upload.read()),)
        elif ctype.startswith("image/"):
            arrays = (model.image_input(body),)
        elif body.startswith(_NPY_MAGIC) or ctype in (
            "application/x-npy",
            "application/octet-stream",
        ):
            arrays = (self._npy(body),)
        else:
            arrays = self._json_arrays(body, model)
            exact = False
        v, outputs, hit = await self._infer(arrays, exact_dtype=exact, add_batch=True)
        names = [o.name for o in v.model.outputs] or [f"output_{i}" for i in range(len(outputs))]
        result: dict[str, Any] = {
            "model": v.model.name,
            "variant": v.name,
            "cached": hit,
            "outputs": [
                {
                    "name": n,
                    "datatype": numpy_to_v2(o.dtype),
                    "shape": list(o.shape),
                    "data": _finite_nested(o),
                }
                for n, o in zip(names, outputs, strict=False)
            ],
        }
        first = outputs[0]
        if v.model.task == "classification" and first.ndim == 2 and first.shape[1] > 1:
            result["predictions"] = first.argmax(axis=1).tolist()
        headers = self._answer_headers(v.name, hit)
        return self._json(result, headers=headers), v.name

    @staticmethod
    def _npy(body: bytes) -> np.ndarray:
        try:
            arr = np.load(io.BytesIO(body), allow_pickle=False)
        except ValueError as exc:
            if "pickle" in str(exc).lower():
                raise ShapeError(
                    "The .npy body holds Python objects, which would need unpickling: refused.",
                    "Send a numeric array (np.save(f, x.astype('float32'))).",
                ) from None
            raise ShapeError(
                f"The body is not a valid .npy file: {exc}.", "Send a file written by np.save."
            ) from None
        except (OSError, EOFError) as exc:
            raise ShapeError(
                f"The body is not a valid .npy file: {exc}.", "Send a file written by np.save."
            ) from None
        if not isinstance(arr, np.ndarray):
            raise ShapeError("The body is not one .npy array.", "Send a file written by np.save.")
        return arr

    @staticmethod
    def _json_arrays(body: bytes, model: ServedModel) -> Any:
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(
                f"The body is not valid JSON: {exc}.", 'Send a JSON array, or {"inputs": ...}.'
            ) from None
        if isinstance(obj, dict):
            obj = obj.get("inputs", obj.get("instances"))
        specs = model.spec.inputs
        values: Any
        if isinstance(obj, dict):
            values = {k: v for k, v in obj.items()}
        elif isinstance(obj, list) and len(specs) == 1:
            values = [obj]
        elif isinstance(obj, list) and len(obj) == len(specs):
            values = obj
        else:
            raise ShapeError(
                "The JSON body is not an array of the model's inputs.",
                f'Send a nested array, or {{"inputs": {{{", ".join(repr(n) for n in model.input_names)}: ...}}}}.',
            )
        dtypes = {t.name: t.dtype for t in specs}

        def arr(value: Any, dtype: str) -> np.ndarray:
            try:
                return np.asarray(value, dtype=dtype if dtype != "bfloat16" else "float32")
            except (ValueError, TypeError, OverflowError):
                raise ShapeError(
                    f"The JSON values are not a rectangular array of {dtype} numbers.",
                    "Send nested lists of numbers with the same length at each level.",
                ) from None

        if isinstance(values, dict):
            return {k: arr(v, dtypes.get(k, "float32")) for k, v in values.items()}
        return [arr(v, t.dtype) for v, t in zip(values, specs, strict=True)]

    async def _compare(self, request: Any) -> Any:
        lat = {k: v.latency for k, v in self.variants.items()}
        models = {k: str(v.model.path) for k, v in self.variants.items()}
        split = self.config.split if self.router is not None else None
        return self._json(compare_report(lat, models, self.shadow_stats, split))

    async def _stats(self, request: Any) -> Any:
        return self._json(
            {
                "model": self.name,
                "ready": self.ready,
                "variants": {k: v.batcher.stats() for k, v in self.variants.items()},
                "cache": {
                    "entries": len(self.cache),
                    "hits": self.cache.hits,
                    "misses": self.cache.misses,
                }
                if self.cache.enabled
                else None,
            }
        )

    async def _metrics(self, request: Any) -> Any:
        from fastapi.responses import Response

        for k, v in self.variants.items():
            self.metrics.queue_depth.labels(k).set(v.batcher.queued)
        body, ctype = self.metrics.render()
        return Response(body, media_type=ctype.split(";")[0], headers={"Content-Type": ctype})
