"""Pinned id vectors: these must never change, or migrated ids stop agreeing with the bot's."""

import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tinybot_migration.lib import ids

USER = uuid.UUID("04b130b8-52dd-5cd3-9560-f57949634d00")


def test_user_vector_from_the_issue():
    assert ids.deterministic_uuid(ids.user_seed("123456789012345678")) == USER


def test_namespaces():
    assert uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8") == ids.NAMESPACE
    assert uuid.UUID("2f36c705-1427-5548-ac1c-5a3db8f633be") == ids.MEMORY_NAMESPACE


def test_content_hash_is_sha256_prefix():
    # SHA-256("hello") is a published test vector.
    assert ids.content_hash("hello") == "2cf24dba5fb0a30e26e83b2ac5b9e29e"
    assert ids.content_hash("héllo 👩‍💻") == hashlib.sha256("héllo 👩‍💻".encode()).hexdigest()[:32]


def _manual_uuid5(namespace: uuid.UUID, seed: str) -> uuid.UUID:
    digest = bytearray(hashlib.sha1(namespace.bytes + seed.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return uuid.UUID(bytes=bytes(digest))


@pytest.mark.parametrize(
    "seed, expected_seed",
    [
        (ids.user_seed("42"), "discord:42"),
        (ids.persona_seed(USER, "Alice"), f"persona:{USER}:Alice"),
        (ids.system_prompt_seed("Default"), "system_prompt:Default"),
        (ids.llm_config_seed(None, "Fast"), "llm_config:global:Fast"),
        (ids.llm_config_seed(USER, "Fast"), f"llm_config:{USER}:Fast"),
        (ids.personality_seed("lilith"), "personality:lilith"),
        (ids.user_personality_config_seed(USER, USER), f"user_personality_config:{USER}:{USER}"),
        (ids.activated_channel_seed("123", USER), f"activated_channel:123:{USER}"),
        (ids.shapes_persona_mapping_seed(USER), f"shapes_persona_mapping:{USER}"),
    ],
)
def test_seed_strings_and_uuid5(seed, expected_seed):
    assert seed == expected_seed
    assert ids.deterministic_uuid(seed) == _manual_uuid5(uuid.NAMESPACE_DNS, expected_seed)


def test_pinned_vectors():
    assert ids.deterministic_uuid(ids.persona_seed(USER, "Alice")) == uuid.UUID(
        "626a0e45-43a7-5efe-ad41-55d6aea3999b"
    )
    assert ids.deterministic_uuid(ids.personality_seed("lilith")) == uuid.UUID(
        "17093904-bd46-5201-8aee-2e57652a0088"
    )
    assert ids.memory_id(USER, USER, "x") == uuid.UUID("ec23aecc-2b8f-5866-9fca-9aac6e56c9dd")


def test_conversation_seed_uses_epoch_microseconds_of_naive_utc_and_aware_times_alike():
    naive = datetime(2025, 1, 2, 3, 4, 5, 678000)
    seed = ids.conversation_message_seed("111", USER, USER, naive, "user", "hi 👋")
    assert seed == (
        f"conversation_history:111:{USER}:{USER}:1735787045678000:user:{ids.content_hash('hi 👋')}"
    )
    aware = naive.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=-7)))
    assert ids.conversation_message_seed("111", USER, USER, aware, "user", "hi 👋") == seed
    assert ids.deterministic_uuid(seed) == uuid.UUID("3ffa480d-97f3-5d64-80f8-548dce5aca0a")


def test_memory_ids_use_the_memory_namespace():
    expected = _manual_uuid5(ids.MEMORY_NAMESPACE, f"{USER}:{USER}:{ids.content_hash('x')}")
    assert ids.memory_id(USER, USER, "x") == expected
    shapes_user = uuid.UUID(int=7)
    assert ids.legacy_memory_id(shapes_user, USER, "x") == _manual_uuid5(
        ids.MEMORY_NAMESPACE, f"{shapes_user}:{USER}:{ids.content_hash('x')}"
    )


def test_collisions_get_numbered_suffixes_in_arrival_order():
    allocator = ids.SeedAllocator()
    seed = ids.persona_seed(USER, "Alice")
    first, second, third = (allocator.allocate(seed) for _ in range(3))
    assert first == ids.deterministic_uuid(seed)
    assert second == ids.deterministic_uuid(f"{seed}:2")
    assert third == ids.deterministic_uuid(f"{seed}:3")
    assert allocator.collisions == 2
    assert ids.expected_ids_for_group(seed, 3) == {first, second, third}


def test_a_natural_key_ending_in_a_suffix_never_merges():
    allocator = ids.SeedAllocator()
    base = ids.persona_seed(USER, "Bob")
    natural_suffix = allocator.allocate(f"{base}:2")  # a persona really named "Bob:2"
    first = allocator.allocate(base)
    second = allocator.allocate(base)  # would be Bob:2, which is taken
    assert len({natural_suffix, first, second}) == 3
    assert second == ids.deterministic_uuid(f"{base}:3")


def test_uuid5_batch_formats_every_id_as_uuid5_does():
    seeds = [f"seed-{i}-é".encode() for i in range(500)] + [b"", b"\t\\"]
    assert ids.uuid5_batch(seeds) == [str(uuid.uuid5(ids.NAMESPACE, s.decode())).encode() for s in seeds]
    assert ids.uuid5_batch(seeds[:3], ids.MEMORY_NAMESPACE) == [
        str(uuid.uuid5(ids.MEMORY_NAMESPACE, s.decode())).encode() for s in seeds[:3]
    ]
    assert ids.uuid5_batch([]) == []


def test_a_batch_allocates_exactly_as_row_by_row_allocation_does():
    base = ids.persona_seed(USER, "Carol")
    # Collisions inside a batch, across batches, and a natural key ending in a suffix.
    seeds = [s.encode() for s in [base, "a", f"{base}:2", base, "b", base, "a", f"{base}:3"]]
    one_by_one = ids.SeedAllocator()
    expected = [one_by_one.allocate_bytes(s) for s in seeds + seeds[:4]]
    batched = ids.SeedAllocator()
    got = (
        batched.allocate_batch(seeds[:3])
        + batched.allocate_batch(seeds[3:])
        + batched.allocate_batch(seeds[:4])
    )
    assert got == expected
    assert len(set(got)) == len(got)
    assert batched.collisions == one_by_one.collisions > 0
    clean = ids.SeedAllocator()
    assert clean.allocate_batch([b"x", b"y"]) == ids.uuid5_batch([b"x", b"y"])
    assert clean.collisions == 0
