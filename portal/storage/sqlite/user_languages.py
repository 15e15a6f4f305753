"""The language each user last used, in SQLite: the UserLanguageStore role."""

from __future__ import annotations

from portal.storage.sqlite.core import SqliteCore


class SqliteUserLanguages(SqliteCore):
    """Play the UserLanguageStore role on the SQLite file."""

    async def user_language(self, username: str) -> str | None:
        """Return the language the user last used, None when none was recorded."""
        rows = await self._fetch(
            "user_language", "SELECT language FROM user_languages WHERE username = ?", (username,)
        )
        return str(rows[0][0]) if rows else None

    async def set_user_language(self, username: str, language: str, *, at: float) -> None:
        """Record language as the user's last used one (at: Unix seconds), replacing any."""
        await self._write_count(
            "set_user_language",
            "INSERT INTO user_languages (username, language, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (username) DO UPDATE SET language = excluded.language,"
            " updated_at = excluded.updated_at",
            (username, language, at),
        )
