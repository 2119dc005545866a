"""Passwords never show: URLs and conninfo strings with `@`, `/`, `:`, `%40` in their passwords."""

import pytest

from tinybot_migration.lib.passwords import redact_url, scrub, unencoded_password_problem

# (connection string, every fragment of its password that must never show, what must still show)
CASES = [
    (
        "postgresql://postgres:SECRET@PW/PROBE789@host/db",
        ["SECRET", "PW/PROBE789", "PROBE789"],
        "postgres:***@host/db",
    ),
    (
        "postgresql://migrator:pa/ss:wd@db.example:5432/tinybot",
        ["pa/ss", "ss:wd"],
        "migrator:***@db.example:5432/tinybot",
    ),
    ("postgresql://u:p%40ss%2Fw%3Ard@h/db", ["p%40ss", "p@ss/w:rd", "w%3Ard"], "u:***@h/db"),
    ("postgresql://u:plain-secret@/db?host=/run/pg", ["plain-secret"], "u:***@/db?host=/run/pg"),
    (
        "postgresql://u@h/db?sslmode=require&password=q1w2e3r4&application_name=x",
        ["q1w2e3r4"],
        "password=***&",
    ),
    (
        "host=db.example user=u password=kv-secret dbname=tinybot",
        ["kv-secret"],
        "password=*** dbname=tinybot",
    ),
    ("host=h password='with space and \\' quote' user=u", ["with space", "quote"], "password=*** user=u"),
    ("postgres://u:odd@pass:word@h", ["odd", "pass:word"], "u:***@h"),
    ("not a url at all password=abc123xyz", ["abc123xyz"], "password=***"),
]


@pytest.mark.parametrize("url, fragments, shown", CASES)
def test_the_mask_hides_every_fragment_of_the_password(url, fragments, shown):
    masked = redact_url(url)
    assert all(fragment not in masked for fragment in fragments), masked
    assert shown in masked


@pytest.mark.parametrize(
    "url, printed",
    [
        ("postgresql://u:p%40ss%2Fw%3Ard@h/db", ["p%40ss%2Fw%3Ard", "p@ss/w:rd"]),
        ("postgresql://u:plain-secret@/db?host=/run/pg", ["plain-secret"]),
        ("postgresql://u@h/db?password=q1w2e3r4", ["q1w2e3r4"]),
        ("host=h password='with space and \\' quote' user=u", ["with space and ' quote"]),
    ],
)
def test_a_driver_message_is_scrubbed_of_every_form_of_the_password(url, printed):
    """Whatever form the driver prints it in: as written, percent-decoded, or as libpq parsed it."""
    message = f"connection to {url} failed: " + "; ".join(f"password {form!r} rejected" for form in printed)
    scrubbed = scrub(message, url)
    assert all(form not in scrubbed for form in printed), scrubbed
    assert "***" in scrubbed


def test_a_url_without_a_password_is_left_alone():
    for url in ("postgresql://u@h/db", "postgresql:///db?host=/tmp", "host=h dbname=d"):
        assert redact_url(url) == url and unencoded_password_problem(url) is None


def test_an_unencoded_at_or_slash_in_a_password_is_refused_with_how_to_fix_it():
    problem = unencoded_password_problem("postgresql://postgres:SECRET@PW/PROBE789@host/db")
    assert problem is not None and "%40" in problem and "%2F" in problem
    assert "SECRET" not in problem and "PROBE789" not in problem
    assert unencoded_password_problem("postgresql://u:p%40ss%2Fw@h/db") is None
