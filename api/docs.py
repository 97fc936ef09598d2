"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) under the app's own Content-Security-Policy.

FastAPI's pages load their scripts from a CDN and start them with an inline script: both
blocked by the CSP (``default-src 'self'``), so the pages were blank (issue 16). Here the
bundles are served from the installed ``fastapi-offline`` package, and each page starts its
bundle from a small file of ours: no CDN, no inline script."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

VENDOR = "/docs-assets/vendor"
OURS = "/docs-assets/init"

_SWAGGER = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{title}} - API reference</title>
<link rel="stylesheet" href="{VENDOR}/swagger-ui.css">
<link rel="icon" type="image/png" href="{VENDOR}/favicon.png">
</head><body>
<div id="swagger-ui"></div>
<script src="{VENDOR}/swagger-ui-bundle.js"></script>
<script src="{OURS}/swagger-init.js"></script>
</body></html>
"""

_REDOC = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{title}} - API reference</title>
<link rel="icon" type="image/png" href="{VENDOR}/favicon.png">
</head><body>
<div id="redoc"></div>
<script src="{VENDOR}/redoc.standalone.js"></script>
<script src="{OURS}/redoc-init.js"></script>
</body></html>
"""


def install(app: FastAPI) -> None:
    """The two pages and their assets (the app is made with ``docs_url=None,
    redoc_url=None``)."""
    app.mount(VENDOR, StaticFiles(directory=str(files("fastapi_offline") / "static")),
              name="docs-vendor")
    app.mount(OURS, StaticFiles(directory=str(files("api") / "docs_static")), name="docs-init")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(_SWAGGER.format(title=title))

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return HTMLResponse(_REDOC.format(title=title))
