"""The one page for people (GET /): the pair, a text box, Translate, the translation and the
time it took. It calls the same `POST /translate` as any client; no external assets, so it
works offline and under a strict content security policy of the host's choosing."""

from __future__ import annotations

import html
import json

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nmt serve: __SOURCE__ to __TARGET__</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; }
  textarea { width: 100%; min-height: 8rem; font: inherit; box-sizing: border-box; }
  #translation { white-space: pre-wrap; min-height: 4rem; border: 1px solid #ccc; padding: .5rem; }
  #status { color: #555; margin: .5rem 0; }
  .error { color: #a00; }
</style>
</head>
<body>
<h1>Translate <span id="pair">__SOURCE__ &rarr; __TARGET__</span></h1>
<p>Model: <code>__MODEL__</code></p>
<label for="source-text">Text (__SOURCE__), one sentence per line</label>
<textarea id="source-text" autofocus></textarea>
<p __KEY_HIDDEN__><label>API key <input id="api-key" type="password"></label></p>
<button id="translate" type="button">Translate</button>
<div id="status" role="status"></div>
<div id="translation" aria-live="polite"></div>
<script>
const PAIR = __PAIR_JSON__;
const button = document.getElementById("translate");
const output = document.getElementById("translation");
const status = document.getElementById("status");
button.addEventListener("click", async () => {
  const body = {q: document.getElementById("source-text").value,
                source: PAIR.source, target: PAIR.target, format: "text"};
  const key = document.getElementById("api-key").value;
  if (key) body.api_key = key;
  button.disabled = true;
  status.className = "";
  status.textContent = "Translating...";
  const started = performance.now();
  try {
    const response = await fetch("translate", {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const answer = await response.json();
    const ms = Math.round(performance.now() - started);
    if (!response.ok) throw new Error(answer.error || response.statusText);
    output.textContent = answer.translatedText;
    status.textContent = "Translated in " + ms + " ms";
  } catch (error) {
    status.className = "error";
    status.textContent = "Error: " + error.message;
  } finally {
    button.disabled = false;
  }
});
</script>
</body>
</html>
"""


def render_page(*, source: str, target: str, model: str, needs_key: bool) -> str:
    pair = json.dumps({"source": source, "target": target}).replace("<", "\\u003c")
    return (
        _PAGE.replace("__SOURCE__", html.escape(source))
        .replace("__TARGET__", html.escape(target))
        .replace("__MODEL__", html.escape(model))
        .replace("__KEY_HIDDEN__", "" if needs_key else "hidden")
        .replace("__PAIR_JSON__", pair)
    )
