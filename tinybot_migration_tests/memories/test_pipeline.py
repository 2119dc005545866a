"""The one memory pipeline with a source it was not written for (as the Qdrant import will be): a
source plans its own rows; the pipeline writes them through the shared writer, or only prices
them, and calls the source's hooks in one order."""

from datetime import timedelta

import pytest

from tinybot_migration.lib.ids import deterministic_uuid
from tinybot_migration.lib.memories.pipeline import estimate_memories, write_memories
from tinybot_migration.lib.memories.writer import MemorySourceReport, NewMemory, memory_ids
from tinybot_migration.lib.personalities import personality_batches
from tinybot_migration_tests.helpers.conversations import T0, Conversations
from tinybot_migration_tests.helpers.openai_server import OpenAITestServer, client_for

SOURCE = "test-notes"


class NotesSource:
    """Notes (slug, text) as memories of the one persona; each personality a batch of its own."""

    stage = "notes"

    def __init__(self, conn, talk: Conversations, notes: list[tuple[str, str]]) -> None:
        self.conn, self.talk, self.notes = conn, talk, notes
        ids = {slug: talk.personality(slug) for slug, _ in notes}
        self.report = MemorySourceReport(personality_ids=ids, per_personality={s: Figures() for s in ids})
        self.calls: list[str] = []
        self.refused: list[str] = []

    def batches(self):
        return personality_batches(self.report.personality_ids, lambda *_: 1, 1)

    def load_bound(self, batches):
        return len(self.notes)

    def plan(self, batch):
        [slug] = batch
        self.calls.append(f"plan {slug}")
        present = memory_ids(self.conn, list(batch.values()), SOURCE)
        memories = [self.memory(slug, i, text) for i, (s, text) in enumerate(self.notes) if s == slug]
        pending = [m for m in memories if m.id not in present]
        self.report.pending += len(pending)
        self.report.already_present += len(memories) - len(pending)
        return pending

    def memory(self, slug: str, index: int, text: str) -> NewMemory:
        personality_id = self.report.personality_ids[slug]
        return NewMemory(
            id=deterministic_uuid(f"note:{personality_id}:{text}"),
            persona_id=self.talk.persona_id,
            personality_id=personality_id,
            content=text,
            is_summarized=False,
            created_at=T0 + timedelta(seconds=index),
            source_system=SOURCE,
        )

    def batch_line(self, number, batches, batch, pending):
        return f"notes batch {number} of {batches}: {pending} to write"

    def apply(self, conn, batch):
        self.calls.append(f"apply {next(iter(batch))}")

    def foresee(self, batch):
        pass  # notes write nothing of their own

    def rejected(self, memory, slug, reason):
        self.refused.append(memory.content)

    def account(self, batch):
        self.calls.append(f"account {next(iter(batch))}")

    def record(self, conn, batch):
        self.calls.append(f"record {next(iter(batch))}")


class Figures:
    written = 0


@pytest.fixture
def server():
    with OpenAITestServer() as running:
        yield running


NOTES = [("alpha", "likes tea"), ("alpha", "FORBIDDEN word"), ("beta", "likes tea"), ("beta", "walks")]


def test_a_new_source_is_priced_then_written_as_priced_and_a_rerun_changes_nothing(new_db, server):
    talk = Conversations(new_db)
    server.reject_marker = "FORBIDDEN"
    client = client_for(server)

    priced = NotesSource(new_db, talk, NOTES)
    estimate = estimate_memories(priced, new_db, client).estimate
    assert server.requests == [] and new_db.execute("SELECT count(*) FROM memories").fetchone()[0] == 0
    assert priced.calls == ["plan alpha", "account alpha", "plan beta", "account beta"]  # no writes
    assert estimate.texts == 3  # "likes tea" twice is one text

    lines: list = []
    source = NotesSource(new_db, talk, NOTES)
    report = write_memories(source, new_db, client, log=lines.append)
    assert source.calls == [
        f"{step} {slug}" for slug in ("alpha", "beta") for step in ("plan", "apply", "account", "record")
    ]
    assert source.refused == ["FORBIDDEN word"]
    stored = new_db.execute(
        "SELECT p.slug, m.content, m.source_system, vector_dims(m.embedding) FROM memories m"
        " JOIN personalities p ON p.id = m.personality_id ORDER BY 1, 2"
    ).fetchall()
    assert stored == [
        ("alpha", "likes tea", SOURCE, 1536),
        ("beta", "likes tea", SOURCE, 1536),
        ("beta", "walks", SOURCE, 1536),
    ]
    assert report.memories_written == 3 and report.per_personality["beta"].written == 2
    # What the estimate priced is what was asked for: texts embedded, and the one refused.
    assert report.provider_inputs + len(source.refused) == estimate.texts
    assert "notes batch 2 of 2: 2 to write" in [str(line) for line in lines]
    assert set(report.phase_seconds) == {"plan", "apply", "embed_and_write", "account"}

    requests = len(server.requests)
    again = write_memories(NotesSource(new_db, talk, NOTES), new_db, client)
    assert again.memories_written == 0 and again.already_present == 3
    resent = {text for request in server.requests[requests:] for text in request}
    assert "FORBIDDEN word" in resent and not resent & {"likes tea", "walks"}  # only the refused text again
    assert estimate_memories(NotesSource(new_db, talk, NOTES), new_db, client).estimate.texts == 1
