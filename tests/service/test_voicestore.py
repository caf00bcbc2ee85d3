"""The voice store: records of stored voices in a real Redis, their owners and their lifecycle."""

from __future__ import annotations

import pytest
import redis

from jobs.contract import VoiceState
from jobs.voicestore import OPERATOR_OWNER, VoiceStore

pytest_plugins = ["api_fixtures"]


@pytest.fixture
def voices(redis_client: redis.Redis) -> VoiceStore:
    return VoiceStore(redis_client)


def test_a_voice_is_found_by_id_or_by_an_operator_file_name(voices: VoiceStore) -> None:
    # Given alice's voice and an operator voice registered from narrator.wav
    mine = voices.create("alice", "me", "voices/v/reference.wav")
    voices.register_operator("narrator", "narrator.wav", "voices/narrator/reference.wav", "ab")
    # When requests name them by id, or the operator voice by its file name
    # Then each resolves for its owner; bob cannot reach alice's voice by any name
    assert voices.find(mine.id, owner="alice") == mine
    found = voices.find("narrator.wav", owner="bob")
    assert found is not None and found.id == "narrator"
    assert voices.find(mine.id, owner="bob") is None
    assert voices.find("nobody.wav", owner="alice") is None


def test_voices_belong_to_their_owner_and_operator_voices_to_all(voices: VoiceStore) -> None:
    # Given a voice of alice and an operator voice
    mine = voices.create("alice", "me", "voices/v/reference.wav")
    op, changed = voices.register_operator("narrator", "narrator.wav", "voices/narrator/reference.wav", "ab")
    # Then alice sees both, bob sees only the operator voice
    assert changed and op.operator and op.owner == OPERATOR_OWNER and op.status is VoiceState.PENDING
    assert [v.id for v in voices.list_voices("alice")] == [mine.id, "narrator"]
    assert [v.id for v in voices.list_voices("bob")] == ["narrator"]
    assert voices.get(mine.id, owner="bob") is None
    assert voices.get("narrator", owner="bob") == op


def test_registering_the_same_operator_voice_again_changes_nothing(voices: VoiceStore) -> None:
    # Given a registered, encoded operator voice
    voices.register_operator("narrator", "narrator.wav", "voices/narrator/reference.wav", "ab")
    voices.mark_ready("narrator", "voices/narrator/latents.safetensors")
    # When it is registered again with the same content, Then it stays ready
    record, changed = voices.register_operator("narrator", "narrator.wav", "voices/narrator/reference.wav", "ab")
    assert not changed and record.status is VoiceState.READY
    # And new content makes it pending again
    record, changed = voices.register_operator("narrator", "narrator.wav", "voices/narrator/reference.wav", "cd")
    assert changed and record.status is VoiceState.PENDING


def test_a_voice_becomes_ready_or_failed_and_can_be_deleted(voices: VoiceStore) -> None:
    # Given two pending voices
    good = voices.create("alice", "good", "voices/a/reference.wav")
    bad = voices.create("alice", "bad", "voices/b/reference.wav")
    # When one is encoded and the other fails
    assert voices.mark_ready(good.id, "voices/a/latents.safetensors", {"duration_s": 3.0})
    assert voices.mark_failed(bad.id, "invalid_audio", "not audio")
    # Then their records say so
    ready, failed = voices.get(good.id), voices.get(bad.id)
    assert ready is not None and ready.status is VoiceState.READY and ready.info == {"duration_s": 3.0}
    assert (
        failed is not None
        and failed.status is VoiceState.FAILED
        and failed.error == {"code": "invalid_audio", "message": "not audio"}
    )
    # And a deleted voice is gone and cannot be resurrected by a late worker
    assert voices.delete(good.id) and not voices.delete(good.id)
    assert not voices.mark_ready(good.id, "k") and voices.get(good.id) is None
    assert [v.id for v in voices.list_voices("alice")] == [bad.id]
