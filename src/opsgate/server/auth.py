"""Bearer-token authentication of the Streamable HTTP transport, from the tokens file."""

from __future__ import annotations

import logging

from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from pydantic import AnyHttpUrl

from opsgate.errors import ConfigurationError
from opsgate.tokens import TokenBook

logger = logging.getLogger(__name__)


class TokenBookVerifier(TokenVerifier):
    """A token is valid while the tokens file holds its hash; it acts as its principal."""

    def __init__(self, book: TokenBook) -> None:
        self.book = book

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            record = self.book.verify(token)  # a stat() and, when it changed, a small read
        except ConfigurationError:
            logger.exception("refusing every token until the tokens file is fixed")
            return None
        if record is None:
            return None
        return AccessToken(
            token=token,
            client_id=record.name,
            subject=record.name,
            scopes=[],
            claims={"roles": list(record.roles), "token_id": record.id},
        )


def auth_settings(base_url: str) -> AuthSettings:
    """The protected-resource metadata: this server is the resource; tokens are minted by
    ``opsgate token create`` (no OAuth flow), so the issuer named is the server itself."""
    return AuthSettings(
        issuer_url=AnyHttpUrl(base_url),
        resource_server_url=AnyHttpUrl(f"{base_url}/mcp"),
        required_scopes=[],
        validate_token_resource=False,
    )
