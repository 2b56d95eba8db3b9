"""The novaops client library: talk to the controller over mTLS gRPC.

Public API: ``NovaopsClient``, the result models in ``novaops.client.models``,
and the errors in ``novaops.client.errors``. Importing this package does not
import grpc until a client is used... except through ``NovaopsClient`` itself,
which is imported lazily here so that ``novaops --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from novaops.client.api import NovaopsClient

__all__ = ["NovaopsClient"]


def __getattr__(name: str) -> Any:
    if name == "NovaopsClient":
        from novaops.client.api import NovaopsClient

        return NovaopsClient
    raise AttributeError(name)
