"""Security questions and their answer hashes in PostgreSQL: the SecurityAnswerStore role."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from portal.storage.base import SecurityAnswer
from portal.storage.postgres.core import PostgresCore
from portal.storage.rows import (
    INSERT_SECURITY_ANSWER,
    SELECT_SECURITY_ANSWERS,
    security_answer_from_row,
    security_answer_params,
)


class PostgresSecurityAnswers(PostgresCore):
    """Play the SecurityAnswerStore role on PostgreSQL: questions and answer hashes."""

    async def get_security_answers(self, username: str) -> list[SecurityAnswer]:
        """Return the user's questions and answer hashes by position (empty if none)."""
        rows = await self._fetch(
            "get_security_answers",
            SELECT_SECURITY_ANSWERS + " WHERE username = $1 ORDER BY position",
            username,
        )
        return [security_answer_from_row(row) for row in rows]

    async def set_security_answers(self, username: str, answers: Sequence[SecurityAnswer]) -> None:
        """Replace all of the user's questions and answer hashes at once."""
        rows = [security_answer_params(username, answer) for answer in answers]

        async def replace_all(conn: Any) -> None:
            # One transaction: a reader sees the old set or the new one, never a mix, and a
            # failing insert rolls the delete back.
            await conn.execute("DELETE FROM security_answers WHERE username = $1", username)
            if rows:
                await conn.executemany(
                    INSERT_SECURITY_ANSWER + " VALUES ($1, $2, $3, $4, $5)",
                    rows,
                )

        await self._run("set_security_answers", replace_all)

    async def delete_security_answers(self, username: str) -> int:
        """Delete the user's questions and answer hashes; return how many rows went."""
        return await self._execute_count(
            "delete_security_answers",
            "DELETE FROM security_answers WHERE username = $1",
            username,
        )
