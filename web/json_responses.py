"""JSON responses encoded by orjson: the documents Flask's encoder writes, in a fraction of its time.

Every poll of a running job is one such response, so the encoder is on the web's hottest path.
"""
from __future__ import annotations

from typing import Any

import orjson
from flask import Response
from flask.json.provider import DefaultJSONProvider


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider with `response` (jsonify and dicts returned by views) encoded by orjson.

    - Keys keep the order the view built them in; non-string keys are written as strings.
    - A non-finite float becomes null: valid JSON, where Python's encoder writes NaN, which
      browsers refuse to parse.
    - Types orjson does not know (dates, decimals, UUIDs, `__html__`) go through Flask's default.
    - `dumps`/`loads` (templates, the session cookie) stay Flask's own.
    """

    OPTIONS = orjson.OPT_NON_STR_KEYS

    def response(self, *args: Any, **kwargs: Any) -> Response:
        """A response of `application/json` holding the single argument, or the arguments as a list or dict."""
        document = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(orjson.dumps(document, default=self.default, option=self.OPTIONS),
                                        mimetype=self.mimetype)
