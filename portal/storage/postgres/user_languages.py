"""The language each user last used, in PostgreSQL: the UserLanguageStore role."""

from __future__ import annotations

from portal.storage.postgres.core import PostgresCore


class PostgresUserLanguages(PostgresCore):
    """Play the UserLanguageStore role on PostgreSQL."""

    async def user_language(self, username: str) -> str | None:
        """Return the language the user last used, None when none was recorded."""
        rows = await self._fetch(
            "user_language", "SELECT language FROM user_languages WHERE username = $1", username
        )
        return str(rows[0][0]) if rows else None

    async def set_user_language(self, username: str, language: str, *, at: float) -> None:
        """Record language as the user's last used one (at: Unix seconds), replacing any."""
        await self._execute_count(
            "set_user_language",
            "INSERT INTO user_languages (username, language, updated_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (username) DO UPDATE SET language = excluded.language,"
            " updated_at = excluded.updated_at",
            username,
            language,
            at,
        )
