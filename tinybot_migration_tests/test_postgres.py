"""psycopg helpers: a real deadlock on the server and the victim's transaction run again; COPY text
rows and fields as the server sends them."""

import threading

import psycopg
import pytest

from tinybot_migration.lib.postgres import copy_line_batches, copy_lines, copy_text_field, retry_deadlocks


def test_copy_lines_are_whole_lines_however_the_blocks_are_cut_and_batched(make_database):
    url = make_database("copy_lines")
    values = ["plain", "tab\there", "new\nline", "", "ü"]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        query = "COPY (SELECT i, v FROM unnest(%s::text[]) WITH ORDINALITY AS t(v, i)) TO STDOUT"
        with cur.copy(query, (values,)) as copy:
            sent = list(copy)  # the server's own blocks, as memoryviews
    lines = list(copy_lines(sent))
    assert len(sent) == len(lines) == 5  # the server sends one row per message
    joined = b"".join(bytes(block) for block in sent)
    cut = [joined[i : i + 7] for i in range(0, len(joined), 7)]
    assert list(copy_lines(cut)) == lines
    assert list(copy_lines([joined])) == lines
    assert list(copy_lines([joined[:-1]])) == lines  # a last line without its newline
    for size in (1, 2, 4, 100):
        batches = list(copy_line_batches(cut, size))
        assert [line for batch in batches for line in batch] == lines
        assert all(batch for batch in batches)
    assert [copy_text_field(line.split(b"\t")[1]).decode() for line in lines] == values


def test_a_copy_field_is_unescaped_to_its_real_bytes():
    assert copy_text_field(b"a\\\\b\\tc\\nd\\re\\bf\\fg\\vh") == b"a\\b\tc\nd\re\bf\fg\vh"
    assert copy_text_field(b"no escapes") == b"no escapes"
    with pytest.raises(ValueError, match="NULL"):
        copy_text_field(b"\\N")


def test_the_deadlock_victim_is_run_again(make_database):
    url = make_database("deadlock")
    with psycopg.connect(url, autocommit=True) as setup:
        setup.execute("CREATE TABLE keys (k int PRIMARY KEY)")
    first_attempts = threading.Barrier(2)
    attempts = {"a": 0, "b": 0}
    errors = []

    def writer(name: str, order: tuple[int, int]) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET deadlock_timeout = '100ms'")

            def transaction() -> None:
                attempts[name] += 1
                with conn.transaction():
                    conn.execute("INSERT INTO keys VALUES (%s) ON CONFLICT DO NOTHING", (order[0],))
                    if attempts[name] == 1:
                        first_attempts.wait()  # both hold their first key: opposite orders deadlock
                    conn.execute("INSERT INTO keys VALUES (%s) ON CONFLICT DO NOTHING", (order[1],))

            try:
                retry_deadlocks(transaction)
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)

    threads = [
        threading.Thread(target=writer, args=("a", (1, 2))),
        threading.Thread(target=writer, args=("b", (2, 1))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(attempts.values()) == [1, 2]  # one victim, run again
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT array_agg(k ORDER BY k) FROM keys").fetchone()[0] == [1, 2]
