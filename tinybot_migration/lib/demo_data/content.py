"""Text pools for the demo data: unicode, emoji (ZWJ sequences too), RTL, quotes, backslashes.

Every text is built from these pools with the generator's seeded `random.Random`, so the same seed
gives the same texts. No pool holds a NUL character (PostgreSQL text cannot store it).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

EMOJI = (
    "😀",
    "😂",
    "🥲",
    "👩‍💻",
    "👨‍👩‍👧‍👦",
    "🏳️‍🌈",
    "👍🏽",
    "❤️",
    "🇯🇵",
    "🤖",
    "✨",
    "🧑🏿‍🚀",
    "🐱",
    "☕",
    "🍡",
)

TOPICS = (
    "the café on rue Saint-Honoré",
    "東京の桜",
    "naïve résumés",
    "coffee ☕",
    "the 👩‍💻 emoji",
    "Dungeons & Dragons",
    "שבת שלום",
    "القهوة العربية",
    "Ωmega builds",
    "jalapeño poppers",
    "the Øresund bridge",
    "北京烤鸭",
    "K-pop 케이팝",
    "my cat Mochi 🐱",
    'the "final" boss',
    "C:\\Games\\saves",
    "Straße names",
    "Привет, мир",
    "crème brûlée",
    "the rain in Kraków",
)

NAMES = (
    "Léa",
    "Zoë",
    "José",
    "Björn",
    "Ана",
    "さくら",
    "小明",
    "نور",
    "Shira",
    "Kai",
    "O'Brien",
    "Renée",
    "Dmitri",
    "Aisha",
)

USER_OPENERS = (
    "hey",
    "hi!",
    "ok so",
    "lol",
    "wait",
    "honestly",
    "hmm",
    "bonjour",
    "こんにちは",
    "مرحبا",
    "שלום",
    "привет",
    "yo",
    "hello again",
    "¿qué tal?",
)

USER_BODIES = (
    "what do you think about {topic}?",
    "i just got back from {topic} and it was amazing",
    "can you remind me what we said about {topic}",
    'my friend said "{topic} is overrated" and i can\'t stop laughing',
    "the path is C:\\Users\\{name}\\Documents\\notes.txt, can you read it?",
    "regex question: why does \\d+\\.\\d* not match {topic}?",
    "tell me a story about {name} and {topic}",
    "i'm so tired today… {topic} didn't help",
    "do you remember {name}? they asked about {topic}",
    "rate {topic} from 1 to 10",
    "can we talk about {topic} again",
    "{name} says hi 👋",
    "what's the difference between 'single' and \"double\" quotes?",
    "it's 3am and i'm thinking about {topic}",
    "ok but hear me out: {topic}",
)

ASSISTANT_BODIES = (
    "Of course! {topic} is one of my favourite things to talk about.",
    "*tilts head* You mean {topic}? Tell me more, {name}.",
    "Honestly? I'd give {topic} a solid 8/10 ✨",
    "Here's a thought:\n\n> {topic} is only overrated by people who never tried it.",
    "Let me check… the file `C:\\Users\\{name}\\notes.txt` isn't something I can open, sorry!",
    'Try this:\n```\nprint("hello\\n{name}")\n```',
    "I remember! {name} asked about {topic} last week.",
    "Mmm, {topic}. That reminds me of a rainy evening in 京都.",
    "You should rest, {name} 💤 {topic} will still be there tomorrow.",
    "'Single' quotes and \"double\" quotes behave the same here — mostly.",
    "Once upon a time, {name} found {topic} in an old attic…",
    "¡Claro que sí! {topic} suena genial.",
    "بالتأكيد! Let's talk about {topic}.",
    "That's a tough one. {topic}? I'd say yes — with caveats.",
    "Noted 📝 — {topic}, {name}, and a cup of tea.",
)

MEMORY_TEMPLATES = (
    "{name} told {shape} about their trip to {topic} and loved it.",
    "{name} and {shape} argued about whether {topic} is overrated 🍍🍕 — {shape} lost.",
    "User prefers to be called “{name}” and mentioned {topic} twice.",
    'Summary:\n- likes {topic}\n- hates mornings\n- has a cat named "Mochi" 🐱',
    "{name} is learning Japanese (日本語) and practices every morning ☀️",
    "{shape} promised {name} a story about {topic} next time.",
    "{name} shared a file path C:\\Users\\{name}\\Desktop and asked {shape} to remember it.",
    '{name} said: "{topic} reminds me of home" 👩‍💻',
    "Group chat: {name} and friends debated {topic} with {shape} until 3am.",
    "{name} (שלום / مرحبا) taught {shape} a greeting in two languages.",
    "{shape} learned that {name}'s favourite dessert is crème brûlée.",
    "{name} was sad about {topic}; {shape} cheered them up 🥲→😀",
)

TRAITS = (
    "curious",
    "kind",
    "a bit sarcastic",
    "dramatic",
    "patient",
    "chaotic good",
    "wise",
    "shy",
    "bubbly",
    "stoic",
    "mischievous",
    "poetic",
)

PERSONA_NAMES = (
    "Alex",
    "Sam",
    "Default",
    "Me",
    "Roleplay me",
    "Work mode",
    "Zoë",
    "Renée",
    "José",
    "Björn",
    "Ана",
    "さくら",
    "小明",
    "نور",
    "Shira שירה",
    "Captain 🏴‍☠️",
    "Night owl 🦉",
    "D'Artagnan",
    'The "real" me',
    "Backslash \\ Bob",
    "Kai",
    "Mika",
    "Jules",
    "Robin",
)

PERSONALITY_NAMES = (
    "Luna",
    "Professor Oak",
    "Sherlock",
    "Aria",
    "Kōhai-chan",
    "Señor Gato",
    "Björk-bot",
    "Dr. Nyx",
    "Captain Vega",
    "Mochi 🍡",
    "雪女 Yuki-onna",
    "ليلى",
    "Noa נועה",
    "Zeus",
    "Marvin",
    "Athena",
    "Pixel",
    "Sage",
    "Ember",
    "Echo",
    "Nova",
    "Orion",
    "Éloïse",
    "Théo",
    "Grimm",
)

USERNAMES = (
    "lea_müller",
    "zoe.codes",
    "jose_garcía",
    "bjorn_",
    "hoshino星野",
    "noor.نور",
    "shira_k",
    "kai",
    "obrien",
    "renee🌸",
    "dmitri_77",
    "aisha",
    "night_owl",
    "pixelpusher",
)

PRONOUNS = ("she/her", "he/him", "they/them", "any", "elle/la", "she/they")


def pick(rng: random.Random, items: Sequence[str]) -> str:
    """rng.choice, about four times cheaper (the generator draws millions of these)."""
    return items[int(rng.random() * len(items))]


def fill(rng: random.Random, template: str) -> str:
    """Replace {topic} and {name} with random picks.

    str.replace rather than str.format: literal braces elsewhere in a text survive.
    """
    rnd = rng.random
    topic = TOPICS[int(rnd() * len(TOPICS))]
    return template.replace("{topic}", topic).replace("{name}", NAMES[int(rnd() * len(NAMES))])


def user_message(rng: random.Random) -> str:
    rnd = rng.random
    r = rnd()
    body = fill(rng, pick(rng, USER_BODIES))
    if r < 0.35:
        text = f"{pick(rng, USER_OPENERS)} {body}"
    elif r < 0.45:
        text = f"{pick(rng, USER_OPENERS)}\n{body}"
    else:
        text = body
    if rnd() < 0.3:
        text += " " + pick(rng, EMOJI)
    if rnd() < 0.08:
        text += "\n\n" + fill(rng, pick(rng, USER_BODIES))
    return text


def assistant_message(rng: random.Random) -> str:
    rnd = rng.random
    text = fill(rng, pick(rng, ASSISTANT_BODIES))
    r = rnd()
    if r < 0.6:
        sep = "\n\n" if rnd() < 0.3 else " "
        text += sep + fill(rng, pick(rng, ASSISTANT_BODIES))
        if r < 0.25:
            text += sep + fill(rng, pick(rng, ASSISTANT_BODIES))
    if rnd() < 0.25:
        text = f"*{pick(rng, TRAITS)} smile* " + text
    if rnd() < 0.2:
        text += " " + pick(rng, EMOJI)
    return text


def memory_text(rng: random.Random, shape: str, name: str, when: str) -> str:
    """A shapes.inc memory summary; `when` (a date) keeps accidental duplicates rare."""
    r = rng.random()
    text = pick(rng, MEMORY_TEMPLATES)
    if r < 0.4:
        text += " " + pick(rng, MEMORY_TEMPLATES)
    text = text.replace("{shape}", shape).replace("{name}", name)
    text = text.replace("{topic}", pick(rng, TOPICS))
    text = f"On {when}: {text}" if r < 0.7 else f"{text} ({when})"
    if rng.random() < 0.25:
        text += " " + pick(rng, EMOJI)
    return text


def prose(rng: random.Random, sentences: int) -> str:
    """A few sentences for descriptions and character sheets."""
    return " ".join(fill(rng, pick(rng, ASSISTANT_BODIES)) for _ in range(sentences))
