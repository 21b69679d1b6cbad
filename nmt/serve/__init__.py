"""`nmt serve`: one model behind an HTTP API (LibreTranslate-compatible and native), with a
page for people. Needs the optional extra `nmt[serve]` (fastapi, uvicorn, prometheus_client,
python-multipart); nothing here is imported unless the command runs."""
