"""Twenty everyday prompts for the packaged local model, with what a sensible answer must hold.

Each prompt starts a new conversation through the gateway, as a member's first message would:
the reply is judged, or for the ``title`` cases the conversation's generated title. An answer is
sensible when it is short, is no piece of transcript (no ``User:``/``Assistant:`` or chat-template
marker), and matches its pattern (the known answer, a greeting, enough items of a list).

    python -m tests.e2e.everyday [--api chat|completions]   prints every answer and the score
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from core.chat import ChatRequest
from core.config import settings_from_dict
from core.errors import GatewayError
from core.gateway import Gateway, build_gateway
from core.local_model import LocalModelServer

MAX_CHARS = 400
JUNK = re.compile(r"\b(user|assistant|model)\s*:|<start_of_turn>|<end_of_turn>|<bos>|<eos>",
                  re.IGNORECASE)
FRUITS = ("apple", "banana", "orange", "grape", "pear", "mango", "strawberr", "cherr", "lemon",
          "peach", "kiwi", "pineapple", "plum", "melon", "lime", "berr", "apricot")
ANIMALS = ("dog", "cat", "horse", "cow", "lion", "tiger", "elephant", "bird", "fish", "rabbit",
           "bear", "monkey", "sheep", "pig", "mouse", "wolf", "fox", "giraffe", "zebra", "goat",
           "duck", "chicken", "deer", "snake", "frog", "owl", "eagle", "whale", "dolphin")


@dataclass(frozen=True)
class Case:
    prompt: str
    expect: str
    """A regular expression (case-insensitive) the answer must match."""
    title: bool = False
    """Judge the conversation's title rather than the reply."""
    at_least: int = 1
    """How many distinct matches of ``expect`` (a list's items)."""

    def verdict(self, answer: str) -> str | None:
        """None when the answer is sensible, else why not."""
        text = answer.strip()
        if not text:
            return "empty"
        if len(text) > (60 if self.title else MAX_CHARS):
            return "too long"
        if JUNK.search(text):
            return "transcript junk"
        if self.title and _words(self.prompt)[:3] == _words(text)[:3]:
            # The prompt itself, echoed by the model or cut by the fallback: not a title.
            return "the prompt, not a title"
        found = {m.group(0).lower() for m in re.finditer(self.expect, text, re.IGNORECASE)}
        if len(found) < self.at_least:
            return f"does not say {self.expect!r}" + (
                f" {self.at_least} times" if self.at_least > 1 else "")
        return None


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _any(words: tuple[str, ...]) -> str:
    return r"\b(" + "|".join(words) + ")"


CASES: tuple[Case, ...] = (
    Case("What is the capital of France?", r"\bparis\b"),
    Case("Hi!", r"\b(hello|hi|hey|greetings)\b"),
    Case("Say hello.", r"\b(hello|hi)\b"),
    Case("What is two plus two?", r"\b(4|four)\b"),
    Case("Name three fruits.", _any(FRUITS), at_least=2),
    Case("What colour is the sky on a clear day?", r"\bblue\b"),
    Case("How many days are there in a week?", r"\b(7|seven)\b"),
    Case("What is the opposite of hot?", r"\bcold\b"),
    Case("Who wrote Romeo and Juliet?", r"\bshakespeare\b"),
    Case("What is the largest planet in our solar system?", r"\bjupiter\b"),
    Case("What do bees make?", r"\bhoney\b"),
    Case("How do you say 'thank you' in French?", r"\bmerci\b"),
    Case("How many legs does a dog have?", r"\b(4|four)\b"),
    Case("Thank you!", r"\b(welcome|pleasure|glad|no problem|happy to help|anytime)\b"),
    Case("At what temperature in Celsius does water boil?", r"\b100\b"),
    Case("List three animals.", _any(ANIMALS), at_least=2),
    Case("What is the freezing point of water in Celsius?", r"\b(0|zero)\b"),
    Case("How do I grow tomatoes on my balcony?", r"\btomato", title=True),
    Case("Can you recommend a good book about the history of Rome?",
         r"\b(rome|roman|history|book)", title=True),
    Case("I need help writing a cover letter for a job application.",
         r"\b(cover letter|letter|job|application)", title=True),
)


@dataclass(frozen=True)
class Result:
    case: Case
    answer: str
    problem: str | None
    seconds: float


async def ask_all(gateway: Gateway) -> list[Result]:
    """Every case as a new conversation of one user, one after the other."""
    _, key = await gateway.principals.create("user", "everyday")
    user = await gateway.authenticate(key)
    results = []
    for case in CASES:
        started = time.perf_counter()
        try:
            done = await gateway.chat(user, ChatRequest(prompt=case.prompt))
        except GatewayError as exc:
            results.append(Result(case, "", f"failed: {exc}", time.perf_counter() - started))
            continue
        answer = done.conversation.title if case.title else done.turn.reply
        results.append(Result(case, answer, case.verdict(answer),
                              time.perf_counter() - started))
    return results


async def run(api: str, folder: Path) -> list[Result]:
    settings = settings_from_dict({
        "storage": {"path": str(folder / "gateway.db")},
        "accounts": [],
        # Titles of a small model on 2 shared cores may take longer than a hosted model's.
        "chat": {"title_timeout_s": 60},
        # One thread: on 2 shared cores, llama.cpp's spinning threads slow each other down.
        "local_model": {"enabled": "always", "threads": 1, "api": api},
    })
    async with LocalModelServer(settings.local_model) as local:
        settings = settings.model_copy(update={"accounts": [local.account()]})
        async with build_gateway(settings) as gateway:
            return await ask_all(gateway)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", choices=("chat", "completions"), default="completions")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = asyncio.run(run(args.api, Path(folder)))
    for result in results:
        mark = "ok " if result.problem is None else "BAD"
        kind = "title" if result.case.title else "reply"
        print(f"{mark} {result.case.prompt}\n    {kind}: {result.answer!r}"
              + (f"\n    ({result.problem})" if result.problem else "")
              + f"  [{result.seconds:.1f} s]")
    sensible = sum(r.problem is None for r in results)
    print(f"{sensible} of {len(results)} sensible (api={args.api})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
