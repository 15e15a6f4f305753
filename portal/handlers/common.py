"""What every handler needs: the client's address and a validated JSON body."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from portal.errors import BadRequestError
from portal.keys import CONFIG
from portal.ratelimit import client_ip

Body = TypeVar("Body", bound=BaseModel)


def request_ip(request: web.Request) -> str:
    """Return the client's address (X-Forwarded-For only from trusted proxies)."""
    return client_ip(request, request.app[CONFIG].server.trusted_proxies)


async def parse_json(request: web.Request, model: type[Body]) -> Body:
    """Parse the JSON body into model, or raise BadRequestError naming the bad fields."""
    try:
        return model.model_validate(await request.json())
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            fields = ", ".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])
            raise BadRequestError(f"The request body needs valid fields: {fields}.") from None
        raise BadRequestError("The request body must be a JSON object.") from None
