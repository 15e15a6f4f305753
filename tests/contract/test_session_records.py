"""SessionRecordStore's contract: session records saved whole, touched forward, deleted per user."""

from __future__ import annotations

from dataclasses import replace

from portal.storage.base import SessionRecord, SessionRecordStore
from tests.contract.records import HOUR, NOW, session

ROLE = "session_records"


async def test_a_saved_session_reads_back_unchanged(storage: SessionRecordStore) -> None:
    remembered = SessionRecord(
        id="cookie-hash-1",
        username="john",
        created_at=NOW,
        last_active_at=NOW + 1,
        expires_at=NOW + 30 * 24 * HOUR,
        remember_me=True,
        data={"csrf": "abc", "groups": ["admins"], "level": 2},
    )

    await storage.session_save(remembered)

    assert await storage.session_get("cookie-hash-1") == remembered
    assert await storage.session_get("unknown") is None


async def test_saving_a_session_again_replaces_it(storage: SessionRecordStore) -> None:
    await storage.session_save(session())

    await storage.session_save(session(expires_at=NOW + 2 * HOUR, data={"step": 2}))

    assert await storage.session_get("cookie-hash-1") == session(
        expires_at=NOW + 2 * HOUR, data={"step": 2}
    )


async def test_touching_a_session_moves_its_last_activity_forward_only(
    storage: SessionRecordStore,
) -> None:
    await storage.session_save(session())

    await storage.session_touch("cookie-hash-1", at=NOW + 50)
    await storage.session_touch("cookie-hash-1", at=NOW + 20)  # a late, out-of-order request
    await storage.session_touch("unknown", at=NOW + 50)

    touched = await storage.session_get("cookie-hash-1")
    assert touched is not None and touched.last_active_at == NOW + 50
    assert await storage.session_get("unknown") is None


async def test_deleting_a_session_says_whether_it_existed(storage: SessionRecordStore) -> None:
    await storage.session_save(session())

    assert await storage.session_delete("cookie-hash-1")
    assert not await storage.session_delete("cookie-hash-1")
    assert await storage.session_get("cookie-hash-1") is None


async def test_deleting_a_users_sessions_leaves_other_users_alone(
    storage: SessionRecordStore,
) -> None:
    await storage.session_save(session("johns-laptop"))
    await storage.session_save(session("johns-phone"))
    await storage.session_save(session("marys-laptop", username="mary"))

    assert await storage.session_delete_user("john") == 2
    assert await storage.session_get("johns-phone") is None
    assert await storage.session_get("marys-laptop") is not None


async def test_deleting_a_users_sessions_can_keep_one_which_a_later_delete_still_finds(
    storage: SessionRecordStore,
) -> None:
    await storage.session_save(session("johns-laptop"))
    await storage.session_save(session("johns-phone"))
    await storage.session_save(session("marys-laptop", username="mary"))

    # A signed-in password change keeps the session that made it.
    assert await storage.session_delete_user("john", keep="johns-laptop") == 1
    assert await storage.session_get("johns-phone") is None
    assert await storage.session_get("johns-laptop") == session("johns-laptop")
    assert await storage.session_delete_user("mary", keep="johns-laptop") == 1
    assert await storage.session_get("johns-laptop") is not None

    assert await storage.session_delete_user("john") == 1
    assert await storage.session_get("johns-laptop") is None


async def test_purging_sessions_deletes_only_those_expired_before_the_cutoff(
    storage: SessionRecordStore,
) -> None:
    await storage.session_save(session("expired", expires_at=NOW + 10))
    await storage.session_save(session("at-cutoff", expires_at=NOW + 20))

    assert await storage.purge_sessions(expired_before=NOW + 20) == 1
    assert await storage.session_get("expired") is None
    assert await storage.session_get("at-cutoff") is not None


async def test_updating_a_sessions_data_replaces_it_and_never_creates_a_session(
    storage: SessionRecordStore,
) -> None:
    await storage.session_save(session())

    assert await storage.session_update_data("cookie-hash-1", {"step": 3})
    assert not await storage.session_update_data("unknown", {"step": 3})

    assert await storage.session_get("cookie-hash-1") == session(data={"step": 3})
    assert await storage.session_get("unknown") is None


async def test_sessions_ended_on_one_instance_are_gone_for_the_other(
    storage: SessionRecordStore, other_instance: SessionRecordStore
) -> None:
    await storage.session_save(session("johns-laptop"))
    await storage.session_save(session("johns-phone"))
    assert await other_instance.session_get("johns-laptop") == session("johns-laptop")

    assert await other_instance.session_delete_user("john") == 2

    assert await storage.session_get("johns-laptop") is None
    assert await storage.session_get("johns-phone") is None


async def test_a_users_sessions_are_listed_oldest_first_and_no_one_elses(
    storage: SessionRecordStore,
) -> None:
    phone = replace(session("johns-phone"), created_at=NOW + 5, last_active_at=NOW + 5)
    await storage.session_save(phone)
    await storage.session_save(session("johns-laptop", data={"ip": "192.0.2.7"}))
    await storage.session_save(session("marys-laptop", username="mary"))

    listed = await storage.sessions_of_user("john")

    assert listed == [session("johns-laptop", data={"ip": "192.0.2.7"}), phone]
    assert [r.id for r in await storage.sessions_of_user("mary")] == ["marys-laptop"]
    assert await storage.sessions_of_user("nobody") == []


async def test_a_deleted_session_is_no_longer_listed_on_any_instance(
    storage: SessionRecordStore, other_instance: SessionRecordStore
) -> None:
    await storage.session_save(session("johns-laptop"))
    await storage.session_save(session("johns-phone"))

    assert await other_instance.session_delete("johns-phone")

    assert [r.id for r in await storage.sessions_of_user("john")] == ["johns-laptop"]
    assert await other_instance.session_delete_user("john") == 1
    assert await storage.sessions_of_user("john") == []
