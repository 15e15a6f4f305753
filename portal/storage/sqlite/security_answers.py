"""Security questions and their answer hashes in SQLite: the SecurityAnswerStore role."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from portal.storage.base import SecurityAnswer
from portal.storage.rows import (
    INSERT_SECURITY_ANSWER,
    SELECT_SECURITY_ANSWERS,
    security_answer_from_row,
    security_answer_params,
)
from portal.storage.sqlite.core import SqliteCore


class SqliteSecurityAnswers(SqliteCore):
    """Play the SecurityAnswerStore role on the SQLite file: questions and answer hashes."""

    async def get_security_answers(self, username: str) -> list[SecurityAnswer]:
        """Return the user's questions and answer hashes by position (empty if none)."""
        rows = await self._fetch(
            "get_security_answers",
            SELECT_SECURITY_ANSWERS + " WHERE username = ? ORDER BY position",
            (username,),
        )
        return [security_answer_from_row(row) for row in rows]

    async def set_security_answers(self, username: str, answers: Sequence[SecurityAnswer]) -> None:
        """Replace all of the user's questions and answer hashes at once."""
        rows = [security_answer_params(username, answer) for answer in answers]

        def replace_all(conn: sqlite3.Connection) -> None:
            # One transaction: a reader sees the old set or the new one, never a mix.
            conn.execute("DELETE FROM security_answers WHERE username = ?", (username,))
            conn.executemany(
                INSERT_SECURITY_ANSWER + " VALUES (?, ?, ?, ?, ?)",
                rows,
            )

        await self._write("set_security_answers", replace_all)

    async def delete_security_answers(self, username: str) -> int:
        """Delete the user's questions and answer hashes; return how many rows went."""
        return await self._write_count(
            "delete_security_answers",
            "DELETE FROM security_answers WHERE username = ?",
            (username,),
        )
