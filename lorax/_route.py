"""One method of lorax.v1.LoraxService and the REST route behind it.

The generated module lorax/v1/messages.py holds one :class:`Route` per method, read
from the method's ``route`` option in proto/lorax/v1/service.proto.
"""

from __future__ import annotations

from typing import Any, NamedTuple

# Values of the ResponseBody enum in proto/lorax/v1/options.proto.
RESPONSE_BODY_JSON = 0
RESPONSE_BODY_EMPTY = 1
RESPONSE_BODY_METRICS = 2


class Route(NamedTuple):
    """One method of the LoRAX service and the REST route behind it."""

    name: str
    full_name: str
    input_type: type[Any]
    output_type: type[Any]
    http_method: str
    path: str
    server_streaming: bool
    done_marker: bool
    response_body: int

    @property
    def empty_response(self) -> bool:
        """The route answers 200 with an empty body (health)."""
        return self.response_body == RESPONSE_BODY_EMPTY

    @property
    def metrics_response(self) -> bool:
        """The route answers Prometheus text or JSON (metrics)."""
        return self.response_body == RESPONSE_BODY_METRICS

    def __repr__(self) -> str:
        return f"<Method {self.name} {self.http_method} {self.path}>"
