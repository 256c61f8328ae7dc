"""The web dashboard: ``create_app(store)`` is an ASGI app; ``pgactors ui`` serves it.

Modules: ``app`` (pages, security headers, error responses), ``api`` (the JSON behind
every page), ``events`` (server-sent events from the change feed), ``auth`` (the
token), ``static`` (the HTML, CSS and JavaScript, no build step). Needs the ``ui``
extra: ``pip install 'pgactors[ui]'``.
"""

from .app import create_app

__all__ = ["create_app"]
