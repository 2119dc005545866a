"""Concurrent writers: a real deadlock on the server, and the victim's transaction run again."""

import threading

import psycopg

from tinybot_migration.postgres import retry_deadlocks


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
