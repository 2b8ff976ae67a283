"""``create_app(settings)``: the FastAPI application (JSON API + server-rendered web UI)."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from assay.arena.api import ScoreFastPath, make_router
from assay.arena.service import Arena
from assay.arena.settings import Settings
from assay.arena.web import make_web_router
from assay.errors import InputError

log = logging.getLogger("assay.arena")
STATIC_DIR = Path(__file__).parent / "static"


def create_app(settings: Settings, arena: Arena | None = None) -> FastAPI:
    """Build the arena application.

    Parameters
    ----------
    settings: where the database, secret and challenges are (see :mod:`assay.arena.settings`).
    arena: an already constructed :class:`Arena` (tests share one); built from ``settings`` if None.

    Example
    -------
    >>> app = create_app(Settings.from_env())  # doctest: +SKIP
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    app = FastAPI(title="assay arena", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.arena = arena or Arena(settings)
    app.include_router(make_router())
    app.include_router(make_web_router())  # the pages, /openapi.json and /docs
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(ScoreFastPath)  # the scoring endpoint with an API key skips FastAPI's routing

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse({"detail": f"invalid request: {where} {first.get('msg', '')}".strip()}, status_code=422)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError):
        # the service's one-line refusals (a taken name, a bad filter, a body that does not fit its model)
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # Details go to the server log only: a traceback could quote internals to a player.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory assay.arena.app:app_from_env`` (each worker builds its own).
    A worker of ``serve --workers N`` ends when that ``serve`` process does (see :mod:`assay.arena.process`)."""
    from assay.arena.process import follow_supervisor_from_env

    follow_supervisor_from_env()
    return create_app(Settings.from_env())
