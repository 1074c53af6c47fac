"""The README's walk-through, run as a newcomer runs it: every ``bash`` block between the
``<!-- walk-through: start -->`` and ``<!-- walk-through: end -->`` markers, in order, in one
``bash`` with ``set -euo pipefail``, against a real ``bot.py`` on a free port of 127.0.0.1 whose
only account is the fake upstream. The ``python`` blocks there run with the ``.venv``'s Python
in that same shell; ``sh`` blocks are not run and must say why on their first line
(``# not run: …``); ``json`` and ``text`` blocks show answers.

The walk-through runs in a temporary folder that looks like a checkout after ``make run``:
``config.toml`` (the test's), ``bot.py`` and ``.venv`` (links to the real ones). The one change
made to the blocks is the address: ``127.0.0.1:8080`` becomes the test's port.

Each run block must have a check below (keyed by a snippet of its code), so a block added to the
walk-through is checked too, not only run.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes.upstream import FakeUpstream
from tests.web.support import KEY_RE
from tests.web.test_bot import ROOT, bot_env, free_port, running_bot

README = ROOT / "README.md"
START, END = "<!-- walk-through: start -->", "<!-- walk-through: end -->"
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
RUN = {"bash", "python"}
SHOWN = {"json", "text"}
NOT_RUN = "sh"
MARK = "@@walk-through block "
README_ADDRESS = "127.0.0.1:8080"
MODEL = "gemma-3-270m"
SCRIPT_TIMEOUT_S = 90


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int

    def where(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


def walk_through(text: str) -> list[Block]:
    """The fenced blocks between the markers, in order."""
    assert text.count(START) == 1 and text.count(END) == 1, "the walk-through markers are gone"
    begin, end = text.index(START), text.index(END)
    assert begin < end
    offset = text[:begin].count("\n") + 1
    section = text[begin:end]
    return [Block(m.group(1), m.group(2), offset + section[:m.start()].count("\n"))
            for m in FENCE.finditer(section)]


def script(blocks: list[Block], address: str) -> str:
    """One bash script: each block preceded by a marker line on stdout, so its output can be
    told apart (and a failing block named)."""
    parts = ["set -euo pipefail"]
    for number, block in enumerate(blocks):
        parts.append(f"printf '\\n{MARK}%d\\n' {number}")
        code = block.code.replace(README_ADDRESS, address)
        if block.lang == "python":
            code = f".venv/bin/python - <<'README_PYTHON'\n{code}README_PYTHON\n"
        parts.append(code)
    parts.append(f"printf '\\n{MARK}end\\n'")
    return "\n".join(parts) + "\n"


def outputs(stdout: str) -> tuple[dict[int, str], bool]:
    """Each block's output by number, and whether the script reached its end."""
    pieces = re.split(re.escape(MARK) + r"(\d+|end)\n", stdout)
    found: dict[int, str] = {}
    for marker, text in zip(pieces[1::2], pieces[2::2], strict=True):
        if marker != "end":
            found[int(marker)] = text.strip()
    return found, "end" in pieces[1::2]


def json_values(text: str) -> list[Any]:
    """The JSON values printed one after another (curl -s adds no newline between them)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        value, at = decoder.raw_decode(text, at)
        values.append(value)
    return values


def answer(prompt: str) -> str:
    return f"An answer to: {prompt}"


# ------------------------------------------------------------------ the checks, block by block


def check_start(out: str) -> None:
    assert json_values(out) == [{"status": "ok", "database": "ok",
                                 "accounts": {"healthy": 1, "cooling": 0, "out": 0}}]


def check_add_user(out: str) -> None:
    [created] = json_values(out)
    assert created["status"] == "success" and KEY_RE.fullmatch(created["api_key"])
    assert (created["user"]["name"], created["user"]["userid"]) == ("ann", "4242")


def check_update_and_list(out: str) -> None:
    updated, listed = json_values(out)
    assert updated["status"] == "success" and updated["user"]["plus"] is True
    assert [u["name"] for u in listed["users"]] == ["ann"]


def check_budgets(out: str) -> None:
    header = "user,name,requests,failed,input_tokens,output_tokens,tokens,cost,currency"
    updated, usage = json_values(out[:out.index(header)])
    assert updated["user"]["limits"] == {"tokens_per_day": 20000}
    assert usage["limits"]["tokens_per_day"] == 20000 and usage["requests_today"] == 3
    assert usage["remaining"]["tokens_per_day"] == 20000 - usage["tokens_today"]
    rows = out[out.index(header):].splitlines()[1:]
    assert len(rows) == 1 and rows[0].split(",")[1] == "ann"
    assert int(rows[0].split(",")[6]) == usage["tokens_today"]


def check_chat(out: str) -> None:
    [reply] = json_values(out)
    assert reply["status"] == "success" and reply["is_new_conversation"] is True
    assert reply["reply"] == answer("Name three prime numbers")  # from the fake upstream
    assert (reply["account"], reply["api_user"]) == ("local", "ann")


def check_follow_up(out: str) -> None:
    assert out == answer("And the next one?")


def check_stream(out: str) -> None:
    events = re.findall(r"^event: (\w+)$", out, re.MULTILINE)
    assert events[0] == "start" and "delta" in events and events[-1] == "done", out
    assert answer("Tell me a joke") in out


def check_recall(out: str) -> None:
    listed, one = json_values(out)
    assert listed["total"] == 2 and len(listed["conversations"]) == 2
    assert [t["prompt"] for t in one["messages"]] == ["Name three prime numbers",
                                                   "And the next one?"]


def check_success(out: str) -> None:
    [removed] = json_values(out)
    assert removed["status"] == "success"


def check_rotate(out: str) -> None:
    assert out == ""  # the new key went into KEY, which the blocks after it use


def check_accounts(out: str) -> None:
    [accounts] = json_values(out)
    assert [a["name"] for a in accounts["accounts"]] == ["local"]


def check_v1(out: str) -> None:
    models, completion = json_values(out[:out.index("data: ")])
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert completion["choices"][0]["message"]["content"] == answer("Hello!")
    assert out.rstrip().endswith("data: [DONE]") and '"usage"' in out


def check_export(out: str) -> None:
    assert out == ""


def check_sdk(out: str) -> None:
    assert out == answer("Say hello")


def check_responses(out: str) -> None:
    assert out.splitlines() == [answer("And another?"), "2 vectors"]


def check_remove_user(out: str) -> None:
    removed, refused = json_values(out)
    assert removed["status"] == "success" and removed["user"]["name"] == "ann"
    assert (refused["status"], refused["code"]) == ("error", "invalid_key")


CHECKS: dict[str, Callable[[str], None]] = {
    "create-admin": check_start,
    '"role": "client"': check_add_user,
    "plus=true": check_update_and_list,
    "tokens_per_day": check_budgets,
    "Name three prime numbers": check_chat,
    "And+the+next+one": check_follow_up,
    "stream=true": check_stream,
    "api/recall?limit": check_recall,
    "remove-conversation": check_success,
    "rotate-key": check_rotate,
    "api/admin/accounts": check_accounts,
    '"$GW/v1/models"': check_v1,
    "export GW KEY": check_export,
    "Say hello": check_sdk,
    "previous_response_id": check_responses,
    "remove-user": check_remove_user,
}


def check_for(block: Block) -> Callable[[str], None]:
    found = [check for snippet, check in CHECKS.items() if snippet in block.code]
    assert len(found) == 1, f"{block.where()}: give this block one check in {__name__}"
    return found[0]


# ------------------------------------------------------------------ the tests


def test_the_walk_through_follows_its_convention() -> None:
    blocks = walk_through(README.read_text(encoding="utf-8"))
    assert sum(b.lang in RUN for b in blocks) >= len(CHECKS)
    for block in blocks:
        assert block.lang in RUN | SHOWN | {NOT_RUN}, f"{block.where()}: unknown kind of block"
        if block.lang == NOT_RUN:
            assert block.code.startswith("# not run: "), (
                f"{block.where()}: a block that is not run says why on its first line")
        if block.lang in RUN:
            check_for(block)


def walk_through_dir(tmp_path: Path, config: Path) -> Path:
    """A folder that looks like a checkout after ``make run``, with the test's config."""
    folder = tmp_path / "checkout"
    folder.mkdir()
    (folder / "config.toml").symlink_to(config)
    (folder / "bot.py").symlink_to(ROOT / "bot.py")
    venv = Path(sys.prefix)
    if (venv / "bin" / "python").exists():
        (folder / ".venv").symlink_to(venv)
    else:  # not run from a virtualenv: the interpreter running the tests stands in for it
        (folder / ".venv" / "bin").mkdir(parents=True)
        (folder / ".venv" / "bin" / "python").symlink_to(sys.executable)
    return folder


def write_config(tmp_path: Path, port: int, upstream: FakeUpstream) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n\n'
        f'[storage]\npath = "{tmp_path / "data" / "gateway.db"}"\n\n'
        '[local_model]\nenabled = "never"\n\n'
        f'[[accounts]]\nname = "local"\nbase_url = "{upstream.base_url}"\napi_key_env = ""\n'
        f'model = "{MODEL}"\nproxy = ""\n',
        encoding="utf-8",
    )
    return config


async def test_the_readme_walk_through_runs_top_to_bottom(tmp_path: Path) -> None:
    blocks = [b for b in walk_through(README.read_text(encoding="utf-8")) if b.lang in RUN]
    async with FakeUpstream("walkthrough", model=MODEL) as upstream:
        upstream.default_reply = lambda messages: answer(messages[-1]["content"])
        port = free_port()
        config = write_config(tmp_path, port, upstream)
        folder = walk_through_dir(tmp_path, config)
        (folder / "walk-through.sh").write_text(script(blocks, f"127.0.0.1:{port}"),
                                                encoding="utf-8")
        env = {k: v for k, v in bot_env().items()
               if k not in ("GW", "KEY", "ADMIN_KEY", "CLIENT_KEY", "CONV")}
        async with running_bot(config, tmp_path, "gateway"):
            process = await asyncio.create_subprocess_exec(
                "bash", "walk-through.sh", cwd=folder, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(process.communicate(), SCRIPT_TIMEOUT_S)
    found, finished = outputs(out.decode())
    if process.returncode != 0 or not finished:
        failed = blocks[max(found)] if found else None
        raise AssertionError(
            f"the walk-through stopped (exit {process.returncode}) in "
            f"{failed.where() if failed else 'its first line'}:\n{failed.code if failed else ''}"
            f"\n--- its output:\n{found.get(max(found), '') if found else ''}"
            f"\n--- stderr:\n{err.decode()}")
    assert sorted(found) == list(range(len(blocks)))
    for number, block in enumerate(blocks):
        try:
            check_for(block)(found[number])
        except (AssertionError, ValueError, KeyError) as exc:
            raise AssertionError(f"{block.where()}:\n{block.code}\n--- printed:\n"
                                 f"{found[number]}") from exc
    # The follow-up went upstream with the conversation's history.
    follow_up = next(r for r in upstream.chat_requests(titles=False)
                     if r.messages[-1]["content"] == "And the next one?")
    assert [m["content"] for m in follow_up.messages] == [
        "Name three prime numbers", answer("Name three prime numbers"), "And the next one?"]
