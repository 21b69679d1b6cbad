"""`nmt serve` as a client sees it: real server processes on loopback, real HTTP.

Two servers for the module: `server` (defaults, small batches so long requests span several)
and `strict` (an API key, small limits, a long batch wait with a short timeout, CORS for one
origin). The SIGTERM drain test runs last: it stops `server` itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _server import Server, start_server

pytest.importorskip("fastapi", reason="nmt serve needs the serve extra")
httpx = pytest.importorskip("httpx")

KEY = "s3cret-key"
ORIGIN = "http://allowed.example"


@pytest.fixture(scope="module")
def server(serve_checkpoint: Path, tmp_path_factory) -> Server:
    log = tmp_path_factory.mktemp("server") / "serve.log"
    srv = start_server(serve_checkpoint, log, "--max-batch-tokens", "64", "--max-wait-ms", "20")
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def strict(serve_checkpoint: Path, tmp_path_factory) -> Server:
    log = tmp_path_factory.mktemp("strict") / "serve.log"
    srv = start_server(
        serve_checkpoint,
        log,
        *("--api-key", KEY, "--max-chars", "200", "--max-lines", "5", "--timeout", "1"),
        *("--max-batch-tokens", "4096", "--max-wait-ms", "5000", "--cors-origin", ORIGIN),
    )
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def sentences(corpus_slice: Path) -> list[str]:
    """64 different German sentences of the real Multi30k test set."""
    with open(corpus_slice / "multi30k" / "test_2016_flickr.de", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(64)]


@pytest.fixture(scope="module")
def reference(serve_checkpoint: Path, sentences: list[str], tmp_path_factory) -> dict[str, str]:
    """What one `nmt translate` gives for each sentence (the server must give the same)."""
    done = subprocess.run(
        [sys.executable, "-m", "nmt.cli", "translate", str(serve_checkpoint), "--device", "cpu"],
        input="\n".join(sentences) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    outputs = done.stdout.split("\n")[: len(sentences)]
    return dict(zip(sentences, outputs))


def lt(url: str, **fields) -> httpx.Response:
    return httpx.post(f"{url}/translate", json=fields, timeout=60)


# --------------------------------------------------------------------------- API shapes


def test_languages_and_health_in_libretranslate_shape(server):
    assert httpx.get(f"{server.url}/languages").json() == [
        {"code": "de", "name": "German", "targets": ["en"]},
        {"code": "en", "name": "English", "targets": []},
    ]
    assert httpx.get(f"{server.url}/health").json() == {
        "status": "ok",
        "source": "de",
        "target": "en",
    }


def test_libretranslate_answers_are_shaped_like_q(server, sentences, reference):
    one, two = sentences[0], sentences[1]
    assert lt(server.url, q=one, source="de", target="en").json() == {
        "translatedText": reference[one]
    }
    assert lt(server.url, q=[one, two], source="de", target="en", format="text").json() == {
        "translatedText": [reference[one], reference[two]]
    }
    # A text of several lines is translated line by line and joined again.
    answer = lt(server.url, q=f"{one}\n\n{two}", source="de", target="en").json()
    assert answer == {"translatedText": f"{reference[one]}\n\n{reference[two]}"}


def test_empty_strings_translate_to_empty_strings(server):
    assert lt(server.url, q="", source="de", target="en").json() == {"translatedText": ""}
    assert lt(server.url, q=["", " "], source="de", target="en").json() == {
        "translatedText": ["", ""]
    }
    assert lt(server.url, q=[], source="de", target="en").json() == {"translatedText": []}


def test_form_fields_and_deep_translators_query_parameters(server, sentences, reference):
    one = sentences[2]
    form = httpx.post(f"{server.url}/translate", data={"q": one, "source": "de", "target": "en"})
    assert form.json() == {"translatedText": reference[one]}
    # deep-translator's LibreTranslator: requests.post(base_url + "translate", params=...)
    # with an empty body: the fields arrive as query parameters.
    params = {"q": one, "source": "de", "target": "en", "format": "text", "api_key": "unused"}
    query = httpx.post(f"{server.url}/translate", params=params)
    assert query.status_code == 200, query.text
    assert query.json()["translatedText"] == reference[one]


def test_deep_translators_libretranslator_works_unchanged(server, sentences, reference):
    deep_translator = pytest.importorskip("deep_translator")
    client = deep_translator.LibreTranslator(
        source="de", target="en", api_key="any", custom_url=f"{server.url}/"
    )
    assert client.translate(sentences[7]) == reference[sentences[7]]


def test_source_auto_is_the_models_source_and_says_so(server, sentences, reference):
    answer = lt(server.url, q=sentences[3], source="auto", target="en").json()
    assert answer == {
        "translatedText": reference[sentences[3]],
        "detectedLanguage": {"confidence": 0.0, "language": "de"},
    }


def test_alternatives_are_further_nbest_hypotheses(server, sentences):
    answer = lt(server.url, q=sentences[4], source="de", target="en", alternatives=1).json()
    native = httpx.post(
        f"{server.url}/v1/translate", json={"lines": [sentences[4]], "beam_size": 2, "n_best": 2}
    ).json()
    nbest = [h["text"] for h in native["translations"][0]["nbest"]]
    assert answer["translatedText"] == nbest[0]
    assert answer["alternatives"] == [t for t in nbest[1:] if t != nbest[0]]


def test_native_api_gives_nbest_scores_and_timing(server, sentences, reference):
    lines = [sentences[5], "", sentences[6]]
    answer = httpx.post(
        f"{server.url}/v1/translate", json={"lines": lines, "n_best": 2, "beam_size": 3}
    ).json()
    assert (answer["source"], answer["target"]) == ("de", "en")
    assert answer["milliseconds"] > 0
    first, empty, third = answer["translations"]
    assert empty == {"text": "", "nbest": [{"text": "", "score": None}]}
    for line in (first, third):
        assert len(line["nbest"]) == 2
        assert line["text"] == line["nbest"][0]["text"]
        assert line["nbest"][0]["score"] >= line["nbest"][1]["score"]
    # The model's own settings (beam 2 from the checkpoint) give what nmt translate gives.
    plain = httpx.post(f"{server.url}/v1/translate", json={"lines": lines}).json()
    assert [t["text"] for t in plain["translations"]] == [
        reference[sentences[5]],
        "",
        reference[sentences[6]],
    ]


def test_openapi_docs_and_metrics(server):
    assert httpx.get(f"{server.url}/docs").status_code == 200
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/translate", "/v1/translate", "/languages", "/health", "/metrics"} <= set(paths)
    text = httpx.get(f"{server.url}/metrics").text
    for series in (
        "nmt_serve_requests_total",
        "nmt_serve_errors_total",
        "nmt_serve_request_seconds_bucket",
        "nmt_serve_batch_lines_bucket",
        "nmt_serve_queue_lines",
    ):
        assert series in text
    assert 'nmt_serve_requests_total{path="/languages",status="200"}' in text


# --------------------------------------------------------------------------- concurrency


@pytest.mark.slow
def test_32_concurrent_clients_get_exactly_their_own_translations(server, sentences, reference):
    """Each client sends its own two sentences (as a list, as lines of one text, or to the
    native API), all at once; every answer matches `nmt translate` line for line."""

    async def client(i: int, http: httpx.AsyncClient) -> tuple[list[str], list[str]]:
        mine = sentences[2 * i : 2 * i + 2]
        if i % 3 == 0:
            r = await http.post("/translate", json={"q": mine, "source": "de", "target": "en"})
            return mine, r.json()["translatedText"]
        if i % 3 == 1:
            q = "\n".join(mine)
            r = await http.post("/translate", json={"q": q, "source": "de", "target": "en"})
            return mine, r.json()["translatedText"].split("\n")
        r = await http.post("/v1/translate", json={"lines": mine})
        return mine, [t["text"] for t in r.json()["translations"]]

    async def all_clients():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            return await asyncio.gather(*(client(i, http) for i in range(32)))

    small = 'nmt_serve_batch_lines_bucket{le="2.0"}'
    batches, small_before = _metric(server, "nmt_serve_batch_lines_count"), _metric(server, small)
    for mine, got in asyncio.run(all_clients()):
        assert got == [reference[s] for s in mine]
    batches = _metric(server, "nmt_serve_batch_lines_count") - batches
    # Some batch held lines of several requests (each request has 2 lines).
    assert _metric(server, small) - small_before < batches


def test_a_request_longer_than_the_batch_budget_spans_batches_in_order(
    server, sentences, reference
):
    lines = sentences[:12]  # ~200 source tokens, --max-batch-tokens 64
    before = _metric(server, "nmt_serve_batch_lines_count")
    answer = lt(server.url, q=lines, source="de", target="en").json()
    assert answer["translatedText"] == [reference[s] for s in lines]
    assert _metric(server, "nmt_serve_batch_lines_count") - before >= 3


def _metric(server: Server, name: str) -> float:
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "headers", "status", "fragment"),
    [
        (b'{"q": "Hallo", "source": "de"', {}, 400, "Invalid JSON format"),
        (b"[1, 2]", {}, 400, "expected an object"),
        # Found broken: these two were a traceback in the server log and a bare 500.
        (b'{"q": "a", "alternatives": ' + b"9" * 5000 + b"}", {}, 400, "Invalid JSON format"),
        (b'{"q": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", {}, 400, "nested too deeply"),
        (b'{"q": "Hall\xff", "source": "de", "target": "en"}', {}, 400, "not UTF-8"),
        (b'{"q": 3, "source": "de", "target": "en"}', {}, 422, "q: expected a string"),
        (b'{"q": ["a", 1], "source": "de", "target": "en"}', {}, 422, "q: expected a string"),
        (b'{"q": "a", "source": 7, "target": "en"}', {}, 422, "source: expected a string"),
        (b'{"q": "a", "source": "de", "target": "en", "alternatives": [1]}', {}, 422, "alter"),
        (b'{"source": "de", "target": "en"}', {}, 400, "missing q parameter"),
        (b'{"q": "a", "target": "en"}', {}, 400, "missing source parameter"),
        (b'{"q": "a", "source": "fr", "target": "en"}', {}, 400, "fr is not supported"),
        (b'{"q": "a", "source": "de", "target": "xx"}', {}, 400, "xx is not supported"),
        (b'{"q": "a", "source": "en", "target": "de"}', {}, 400, "not available as a target"),
        (b'{"q": "a", "source": "de", "target": "en", "format": "html"}', {}, 400, "html"),
    ],
)
def test_bad_libretranslate_requests_get_a_json_error(server, body, headers, status, fragment):
    r = httpx.post(
        f"{server.url}/translate",
        content=body,
        headers={"Content-Type": "application/json", **headers},
    )
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and fragment in r.json()["error"], r.text


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"lines": "Hallo"}, 422, "lines"),
        ({"lines": ["a"], "beam_size": "4"}, 422, "beam_size"),
        ({"lines": ["a"], "beam_size": 0}, 422, "beam_size"),
        ({"lines": ["a"], "n_best": 3, "beam_size": 2}, 422, "n_best"),
        ({"lines": ["a"], "length_penalty": "NaN"}, 422, "length_penalty"),
        ({"lines": ["a"], "beam": 2}, 422, "beam"),
    ],
)
def test_bad_native_requests_get_a_json_error(server, body, status, fragment):
    r = httpx.post(f"{server.url}/v1/translate", json=body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"], r.text


def test_nan_in_json_is_refused_not_decoded(server):
    r = httpx.post(
        f"{server.url}/v1/translate",
        content=b'{"lines": ["a"], "length_penalty": NaN}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422 and "length_penalty" in r.json()["error"], r.text


def test_unknown_paths_and_methods_get_json_errors(server):
    assert httpx.get(f"{server.url}/nowhere").json() == {"error": "Not Found"}
    r = httpx.get(f"{server.url}/translate")
    assert r.status_code == 405 and "error" in r.json()


def test_too_many_characters_or_lines_is_413(strict):
    auth = {"source": "de", "target": "en", "api_key": KEY}
    r = lt(strict.url, q="x" * 201, **auth)
    assert r.status_code == 413 and "200" in r.json()["error"], r.text
    r = lt(strict.url, q=["a"] * 6, **auth)
    assert r.status_code == 413 and "--max-lines" in r.json()["error"], r.text
    r = lt(strict.url, q="a\n" * 6, **auth)  # 7 lines of one text
    assert r.status_code == 413, r.text


def test_api_key_missing_or_wrong_is_401_and_right_is_served(strict):
    fields = {"q": "", "source": "de", "target": "en"}
    missing = lt(strict.url, **fields)
    assert missing.status_code == 401 and "missing API key" in missing.json()["error"]
    wrong = lt(strict.url, **fields, api_key=KEY[:-1] + "X")
    assert wrong.status_code == 401 and wrong.json() == {"error": "Invalid API key"}
    assert lt(strict.url, **fields, api_key=KEY).json() == {"translatedText": ""}
    bearer = httpx.post(
        f"{strict.url}/v1/translate",
        json={"lines": [""]},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert bearer.status_code == 200, bearer.text
    wrong_type = lt(strict.url, **fields | {"api_key": 12345})
    assert wrong_type.status_code == 401


def test_a_request_that_outlives_its_timeout_is_504_and_the_server_serves_on(strict):
    # --max-wait-ms 5000 with --timeout 1: a lone short request waits longer than it may.
    started = time.monotonic()
    r = lt(strict.url, q="Ein Hund.", source="de", target="en", api_key=KEY)
    assert r.status_code == 504 and "--timeout" in r.json()["error"], r.text
    assert time.monotonic() - started < 4
    assert httpx.get(f"{strict.url}/health").status_code == 200


def test_a_client_that_disconnects_mid_request_is_dropped_and_the_server_serves_on(strict):
    body = json.dumps({"q": "Zwei Hunde.", "source": "de", "target": "en", "api_key": KEY})
    host, port = strict.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            f"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
        )
        time.sleep(0.3)  # the request is queued, waiting for its batch
    deadline = time.monotonic() + 10
    while "POST /translate 499" not in strict.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "POST /translate 499" in strict.log()
    assert httpx.get(f"{strict.url}/health").status_code == 200


def test_cors_is_off_unless_an_origin_is_given(server, strict):
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    allowed = httpx.options(f"{strict.url}/translate", headers=preflight)
    assert allowed.headers.get("access-control-allow-origin") == ORIGIN
    other = httpx.options(
        f"{strict.url}/translate", headers=preflight | {"Origin": "http://evil.example"}
    )
    assert "access-control-allow-origin" not in other.headers
    closed = httpx.get(f"{server.url}/languages", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in closed.headers


def test_every_request_is_logged_on_one_line(server):
    httpx.get(f"{server.url}/languages")
    httpx.post(f"{server.url}/translate", json={"q": ["", ""], "source": "de", "target": "en"})
    log = server.log()
    assert "GET /languages 200 lines=0 " in log
    assert "POST /translate 200 lines=2 " in log


# --------------------------------------------------------------------------- SIGTERM (last)


@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight_then_exits_0(server, sentences, reference):
    lines = sentences[:24]  # several batches of --max-batch-tokens 64

    async def in_flight():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            request = asyncio.create_task(
                client.post("/translate", json={"q": lines, "source": "de", "target": "en"})
            )
            # SIGTERM once the request's lines are queued: it is in flight, not yet done.
            while _metric(server, "nmt_serve_queue_lines") == 0 and not request.done():
                await asyncio.sleep(0.02)
            assert not request.done()
            server.process.send_signal(signal.SIGTERM)
            return await request

    answer = asyncio.run(in_flight())
    assert answer.status_code == 200, answer.text
    assert answer.json()["translatedText"] == [reference[s] for s in lines]
    assert server.process.wait(60) == 0, server.log()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/health")
    assert server.log().rstrip().endswith("stopped")
