"""The HTTP routes: LibreTranslate's API, the native API, health, metrics, the page.

LibreTranslate compatibility (its libretranslate/app.py is the reference): `POST /translate`
takes JSON, form fields or query parameters (`q` a string or a list, `source`, `target`,
`format`, `api_key`, `alternatives`) and answers `{"translatedText": ...}` shaped like `q`;
`GET /languages` lists `[{"code", "name", "targets"}]`; errors are `{"error": "..."}`.
Deliberate differences, each the status HTTP defines for the case: a wrong API key is 401
(LibreTranslate says 403), a text over --max-chars or a request over --max-lines is 413
(LibreTranslate says 400), a wrong JSON type is 422, and `q: ""` translates to ""
(LibreTranslate refuses it).
`source: "auto"` is read as the model's source language: one model serves one pair, and no
language detection runs (`detectedLanguage` says so with confidence 0).

A `q` string is translated line by line (the model is a sentence-level one) and the lines are
joined again with "\\n".
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from nmt.decoding.options import SEARCH_FIELDS, DecodeOptions
from nmt.errors import NmtError
from nmt.serve.batcher import Batcher, BatchReport, LineResult
from nmt.serve.model import ServedModel
from nmt.serve.page import render_page

WARM_UP_LINE = "Hello."
# Names for /languages; a code missing here is shown as itself.
LANGUAGE_NAMES = {
    "ar": "Arabic",
    "cs": "Czech",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "it": "Italian",
    "ja": "Japanese",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "zh": "Chinese",
}
ROUTES = ("/", "/translate", "/v1/translate", "/languages", "/health", "/metrics", "/docs")


@dataclass(frozen=True)
class ServeSettings:
    max_batch_tokens: int = 2048
    max_wait_ms: float = 5.0
    max_chars: int = 20_000  # per request, all lines together
    max_lines: int = 1_000  # per request
    max_alternatives: int = 4
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    timeout: float = 60.0  # seconds a request may wait for its translation


class ApiError(Exception):
    """An answer with an HTTP status and LibreTranslate's `{"error": message}` body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# 499: nginx's "client closed request"; nobody reads it, but the log and metrics do.
CLIENT_GONE = 499


# --------------------------------------------------------------------------- native API shapes


class NativeRequest(BaseModel):
    """POST /v1/translate: lines plus decoding options (absent: the model's own)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    lines: list[str]
    # Checked by the rules every decoding option follows (`nmt.decoding.options`).
    beam_size: int | None = None
    n_best: int | None = None
    length_penalty: float | None = None
    min_len: int | None = None
    max_len_a: float | None = None
    max_len_b: int | None = None
    api_key: str | None = None


class Hyp(BaseModel):
    text: str
    score: float | None  # log_prob / length**alpha; None for an empty input (no search)


class NativeLine(BaseModel):
    text: str
    nbest: list[Hyp]


class NativeResponse(BaseModel):
    source: str
    target: str
    translations: list[NativeLine]
    milliseconds: float


LT_REQUEST_SCHEMA = {
    "type": "object",
    "required": ["q", "source", "target"],
    "properties": {
        "q": {
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            "description": "Text (translated line by line) or a list of texts.",
        },
        "source": {"type": "string", "description": "Source language code, or auto."},
        "target": {"type": "string", "description": "Target language code."},
        "format": {"type": "string", "enum": ["text"], "default": "text"},
        "api_key": {"type": "string"},
        "alternatives": {"type": "integer", "minimum": 0, "default": 0},
    },
}


# --------------------------------------------------------------------------- metrics


class Metrics:
    """The Prometheus series of one app (its own registry: tests build several apps)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r, labels = self.registry, ["path", "status"]
        self.requests = Counter("nmt_serve_requests", "HTTP requests answered", labels, registry=r)
        self.errors = Counter(
            "nmt_serve_errors", "HTTP requests answered with a 4xx or 5xx", labels, registry=r
        )
        self.latency = Histogram(
            "nmt_serve_request_seconds",
            "Time from request to answer",
            ["path"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.batch_lines = Histogram(
            "nmt_serve_batch_lines",
            "Lines per decoded batch",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )
        self.batch_tokens = Histogram(
            "nmt_serve_batch_tokens",
            "Source tokens per decoded batch",
            registry=r,
            buckets=(16, 64, 256, 512, 1024, 2048, 4096, 8192),
        )
        self.batch_failures = Counter(
            "nmt_serve_batch_failures", "Batches whose decoding raised", registry=r
        )
        self.queue = Gauge("nmt_serve_queue_lines", "Lines waiting to be decoded", registry=r)

    def batch(self, report: BatchReport) -> None:
        self.batch_lines.observe(report.lines)
        self.batch_tokens.observe(report.tokens)
        if report.failed:
            self.batch_failures.inc()

    def answered(self, path: str, status: int, seconds: float) -> None:
        label = path if path in ROUTES else "other"
        self.requests.labels(label, str(status)).inc()
        if status >= 400:
            self.errors.labels(label, str(status)).inc()
        self.latency.labels(label).observe(seconds)


class RequestLog:
    """ASGI middleware: one log line and the metrics per request (method, path, status,
    lines, ms). Plain ASGI, so a client's disconnect still reaches the route."""

    def __init__(self, app, *, metrics: Metrics, log: Callable[[str], None]):
        self.app = app
        self.metrics = metrics
        self.log = log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - started
            lines = scope.get("state", {}).get("lines", 0)
            self.metrics.answered(scope["path"], status, seconds)
            self.log(
                f"{scope['method']} {scope['path']} {status} lines={lines} {seconds * 1000:.1f}ms"
            )


# --------------------------------------------------------------------------- the app


def create_app(
    model: ServedModel, settings: ServeSettings, *, log: Callable[[str], None] | None = None
) -> FastAPI:
    log = log or _log_to_stderr
    metrics = Metrics()
    batcher = Batcher(
        model.translate,
        model.measure,
        max_batch_tokens=settings.max_batch_tokens,
        max_wait_ms=settings.max_wait_ms,
        on_batch=metrics.batch,
    )
    metrics.queue.set_function(batcher.queued_lines)
    state = {"ready": False, "problem": None}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        warm_up = asyncio.create_task(_warm_up(batcher, state, log))
        yield
        warm_up.cancel()
        # uvicorn has let every request in flight finish; the queue is empty or abandoned.
        await asyncio.to_thread(batcher.stop)

    app = FastAPI(
        title="nmt serve",
        description=f"{model.name}: {model.source} -> {model.target}",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.metrics = metrics
    _add_error_handlers(app)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization"],
        )
    app.add_middleware(RequestLog, metrics=metrics, log=log)
    _add_routes(app, model, settings, batcher, metrics, state)
    return app


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _warm_up(batcher: Batcher, state: dict, log: Callable[[str], None]) -> None:
    """/health turns ready once the model has translated one line for real."""
    try:
        await asyncio.wrap_future(batcher.submit([WARM_UP_LINE]).future)
    except Exception as exc:  # noqa: BLE001 - reported by /health and the log
        state["problem"] = f"the warm-up translation failed: {exc}"
        log(f"error: {state['problem']}")
        return
    state["ready"] = True
    log("ready")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)


def _add_routes(
    app: FastAPI,
    model: ServedModel,
    settings: ServeSettings,
    batcher: Batcher,
    metrics: Metrics,
    state: dict,
) -> None:
    async def translate_lines(
        request: Request, lines: list[str], options: DecodeOptions
    ) -> list[LineResult]:
        request.state.lines = len(lines)
        job = batcher.submit(lines, options)
        return await _await_job(request, job.future, timeout=settings.timeout)

    needs_key = settings.api_key is not None
    page_html = render_page(
        source=model.source, target=model.target, model=model.name, needs_key=needs_key
    )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    @app.get("/health", summary="Ready once the model has translated a warm-up line")
    async def health() -> JSONResponse:
        if state["ready"]:
            return JSONResponse({"status": "ok", "source": model.source, "target": model.target})
        problem = state["problem"]
        body = {"status": "error", "error": problem} if problem else {"status": "loading"}
        return JSONResponse(body, status_code=503)

    @app.get("/metrics", summary="Prometheus text format")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/languages", summary="The model's language pair, in LibreTranslate's shape")
    async def languages() -> list[dict]:
        return [
            {"code": model.source, "name": _name(model.source), "targets": [model.target]},
            {"code": model.target, "name": _name(model.target), "targets": []},
        ]

    @app.post(
        "/translate",
        summary="LibreTranslate-compatible translation (JSON, form fields or query)",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": LT_REQUEST_SCHEMA},
                    "application/x-www-form-urlencoded": {"schema": LT_REQUEST_SCHEMA},
                }
            }
        },
    )
    async def libretranslate(request: Request) -> JSONResponse:
        fields = await _request_fields(request)
        _check_key(settings, fields.get("api_key"), request)
        ask = _libretranslate_request(fields, model, settings)
        options = _alternatives_options(ask.alternatives, model)
        results = await translate_lines(request, ask.lines, options)
        return JSONResponse(_libretranslate_answer(ask, results, model))

    @app.post(
        "/v1/translate",
        summary="Native translation: lines and decoding options in, n-best with scores out",
        response_model=NativeResponse,
        openapi_extra={
            "requestBody": {
                "content": {"application/json": {"schema": NativeRequest.model_json_schema()}}
            }
        },
    )
    async def native(request: Request) -> JSONResponse:
        started = time.perf_counter()
        fields = await _request_fields(request, json_only=True)
        _check_key(settings, fields.get("api_key"), request)
        ask = _validated(NativeRequest, fields)
        _check_size(ask.lines, settings)
        options = _checked_options(model, **ask.model_dump(include=set(SEARCH_FIELDS)))
        results = await translate_lines(request, ask.lines, options)
        lines = [
            NativeLine(
                text=r.texts[0],
                nbest=[Hyp(text=t, score=_score(r, i)) for i, t in enumerate(r.texts)],
            )
            for r in results
        ]
        answer = NativeResponse(
            source=model.source,
            target=model.target,
            translations=lines,
            milliseconds=round((time.perf_counter() - started) * 1000, 3),
        )
        return JSONResponse(answer.model_dump())


def _checked_options(model: ServedModel, **values) -> DecodeOptions:
    """A request's decoding options, refused (422, naming the option) where the options'
    own rules or the model's settings do not allow them."""
    try:
        options = DecodeOptions(**values)
        model.check(options)
    except NmtError as exc:
        raise ApiError(422, str(exc)) from None
    return options


def _alternatives_options(alternatives: int, model: ServedModel) -> DecodeOptions:
    """LibreTranslate's `alternatives`: an n-best list of alternatives + 1, searched with a
    beam at least that wide; a backend without n-best lists (a CTranslate2 directory) has
    none to give."""
    if not alternatives:
        return DecodeOptions()
    if not model.translator.capabilities.n_best:
        raise ApiError(
            400,
            "Invalid request: alternatives: this server's model gives one translation per "
            "text (it is a CTranslate2 export); ask for 0 alternatives",
        )
    n_best = alternatives + 1
    return _checked_options(model, beam_size=max(model.beam_size, n_best), n_best=n_best)


def _score(result: LineResult, i: int) -> float | None:
    return result.hypotheses[i].score if i < len(result.hypotheses) else None


def _name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


# --------------------------------------------------------------------------- request reading


async def _request_fields(request: Request, *, json_only: bool = False) -> dict[str, Any]:
    """The request's fields: a JSON object body, or (LibreTranslate's clients send both) form
    fields over query parameters."""
    body = await request.body()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the request body is not UTF-8 (byte {exc.start})") from None
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if json_only or kind == "application/json" or kind.endswith("+json"):
        return _json_object(text)
    fields: dict[str, Any] = dict(request.query_params)
    if kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = await request.form()
        except Exception as exc:  # noqa: BLE001 - python-multipart's many parse errors
            raise ApiError(400, f"invalid form data: {exc}") from None
        fields.update({k: v for k, v in form.items() if isinstance(v, str)})
    return fields


def _json_object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"Invalid JSON format: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise ApiError(400, f"Invalid JSON format: {exc}") from None
    except RecursionError:  # [[[[...]]]] deeper than Python's stack
        raise ApiError(400, "Invalid JSON format: nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "Invalid JSON format: expected an object")
    return data


def _validated(shape: type[BaseModel], fields: dict[str, Any]) -> Any:
    try:
        return shape.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise ApiError(422, problems) from None


def _check_key(settings: ServeSettings, given: Any, request: Request) -> None:
    """With --api-key, the request's `api_key` field (or `Authorization: Bearer KEY`) must
    match it; compared in constant time, so the answer time says nothing about the key."""
    if settings.api_key is None:
        return
    header = request.headers.get("authorization", "")
    if given is None and header.lower().startswith("bearer "):
        given = header[7:].strip()
    if given is None or given == "":
        raise ApiError(401, "missing API key: give api_key (or Authorization: Bearer KEY)")
    if not isinstance(given, str) or not hmac.compare_digest(
        given.encode("utf-8"), settings.api_key.encode("utf-8")
    ):
        raise ApiError(401, "Invalid API key")


def _check_size(lines: list[str], settings: ServeSettings) -> None:
    if len(lines) > settings.max_lines:
        raise ApiError(
            413,
            f"Invalid request: {len(lines)} lines exceed the limit of {settings.max_lines} "
            "(--max-lines)",
        )
    chars = sum(len(line) for line in lines)
    if chars > settings.max_chars:
        raise ApiError(
            413,
            f"Invalid request: request ({chars}) exceeds text limit ({settings.max_chars}, "
            "--max-chars)",
        )


async def _await_job(request: Request, future, *, timeout: float) -> list[LineResult]:
    """The job's results; its future is cancelled (its lines dropped) when the client goes
    away or the timeout passes first."""
    result = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        done, _ = await asyncio.wait(
            {result, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        gone.cancel()
    if result in done:
        try:
            return result.result()
        except Exception as exc:  # noqa: BLE001 - a decoding failure of this request's batch
            raise ApiError(500, f"translation failed: {type(exc).__name__}: {exc}") from None
    result.cancel()
    if gone in done:
        raise ApiError(CLIENT_GONE, "the client closed the connection")
    raise ApiError(504, f"the translation took longer than the {timeout:g} s timeout (--timeout)")


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: what comes next on the
    ASGI receive channel is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# --------------------------------------------------------------------------- LibreTranslate


@dataclass(frozen=True)
class LibreTranslateRequest:
    q: str | list[str]
    lines: list[str]  # every text's lines, in order
    spans: list[int]  # lines per text of q
    auto: bool
    alternatives: int


def _libretranslate_request(
    fields: dict[str, Any], model: ServedModel, settings: ServeSettings
) -> LibreTranslateRequest:
    for name in ("q", "source", "target"):
        if fields.get(name) is None:
            raise ApiError(400, f"Invalid request: missing {name} parameter")
    q = fields["q"]
    if not (isinstance(q, str) or (isinstance(q, list) and all(isinstance(t, str) for t in q))):
        raise ApiError(422, "q: expected a string or a list of strings")
    for name in ("source", "target", "format", "api_key"):
        if fields.get(name) is not None and not isinstance(fields[name], str):
            raise ApiError(422, f"{name}: expected a string")
    if fields.get("format") not in (None, "", "text"):
        raise ApiError(400, f"{fields['format']} format is not supported (only text)")
    _check_pair(fields["source"], fields["target"], model)
    alternatives = _alternatives(fields.get("alternatives", 0), settings)
    texts = [q] if isinstance(q, str) else q
    split = [t.replace("\r\n", "\n").replace("\r", "\n").split("\n") for t in texts]
    lines = [line for parts in split for line in parts]
    _check_size(lines, settings)
    return LibreTranslateRequest(
        q=q,
        lines=lines,
        spans=[len(parts) for parts in split],
        auto=fields["source"] == "auto",
        alternatives=alternatives,
    )


def _check_pair(source: str, target: str, model: ServedModel) -> None:
    known = (model.source, model.target)
    if source not in (*known, "auto"):
        raise ApiError(400, f"{source} is not supported")
    if target not in known:
        raise ApiError(400, f"{target} is not supported")
    if (source if source != "auto" else model.source, target) != (model.source, model.target):
        raise ApiError(
            400,
            f"{_name(target)} ({target}) is not available as a target language from "
            f"{_name(source)} ({source}); this server translates {model.source} to {model.target}",
        )


def _alternatives(value: Any, settings: ServeSettings) -> int:
    """LibreTranslate's `alternatives`: extra n-best translations (a number, also as text)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError(422, "alternatives: expected a whole number >= 0")
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, "Invalid request: alternatives parameter is not a number") from None
    if not 0 <= number <= settings.max_alternatives:
        raise ApiError(
            400,
            f"Invalid request: alternatives parameter must be in 0..{settings.max_alternatives}",
        )
    return number


def _libretranslate_answer(
    ask: LibreTranslateRequest, results: list[LineResult], model: ServedModel
) -> dict[str, Any]:
    texts, alternatives, at = [], [], 0
    for span in ask.spans:
        chunk = results[at : at + span]
        at += span
        texts.append("\n".join(r.texts[0] for r in chunk))
        alternatives.append(_joined_alternatives(chunk, ask.alternatives, texts[-1]))
    single = isinstance(ask.q, str)
    answer: dict[str, Any] = {"translatedText": texts[0] if single else texts}
    if ask.alternatives:
        answer["alternatives"] = alternatives[0] if single else alternatives
    if ask.auto:
        detected = {"confidence": 0.0, "language": model.source}
        answer["detectedLanguage"] = detected if single else [detected] * len(texts)
    return answer


def _joined_alternatives(chunk: list[LineResult], count: int, best: str) -> list[str]:
    """The i-th alternative of a text: every line's (i+1)-th hypothesis (or its best where it
    has fewer), without repeats of the best translation, as LibreTranslate filters them."""
    found = []
    for i in range(1, count + 1):
        text = "\n".join(r.texts[i] if i < len(r.texts) else r.texts[0] for r in chunk)
        if text != best and text not in found:
            found.append(text)
    return found
