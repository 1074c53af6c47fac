"""Seed a gateway database fast (not through HTTP): principals, conversations, turns and their
usage rows, loaded by the storage package's bulk loader in big transactions.

    python -m bench.seed --db PATH [--users 10000] [--conversations 100000] [--turns 1000000]
                         [--keys-out FILE]

The schema is the gateway's own (``core.storage.bulk`` opens the file as the gateway would,
applying its migrations), and keys are hashed with ``core.keys``. Besides the background
rows, it always adds one *probe* user (with a known key) owning ``--probe-conversations``
conversations of ``--probe-turns`` turns each, so a seeded and an empty database can be
compared on identical recall requests. ``--keys-out`` gets a JSON file with the probe's key
and conversation ids.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.clock import iso
from core.ids import new_id
from core.keys import hash_key, new_key, shown_prefix
from core.storage.bulk import SqliteBulkLoader

BATCH_CONVERSATIONS = 10_000
CLIENTS = 10
ACCOUNT = "stub"
MODEL = "bench-model"

_PROMPTS = [
    f"Question {i}: could you explain, briefly and with an example, how item {i} works?"
    + " Some more context." * (i % 4)
    for i in range(64)
]
_REPLIES = [
    f"Answer {i}: it works by taking the input, checking it, and passing it on. "
    + "Here is a longer explanation sentence with some detail in it. " * (2 + i % 5)
    for i in range(64)
]


def _principal_row(role: str, name: str, client_id: int | None, external_id: str | None,
                   created: str) -> tuple[tuple[Any, ...], str]:
    key = new_key()
    return (role, name, client_id, external_id, 0, hash_key(key), shown_prefix(key),
            created), key


def _unix_ms(moment: datetime) -> int:
    """The id of a row seeded at ``moment`` carries that time, as the gateway's own would."""
    return int(moment.timestamp() * 1000)


def _conversation_rows(owner: tuple[int, int | None], number: int, turns: int,
                       start: datetime, conversations: list[tuple[Any, ...]],
                       turn_rows: list[tuple[Any, ...]], usage_rows: list[tuple[Any, ...]],
                       ) -> str:
    owner_id, owner_client = owner
    conversation_id = new_id(_unix_ms(start))
    parent: str | None = None
    moment = start
    for position in range(turns):
        prompt = _PROMPTS[(number + position) % len(_PROMPTS)]
        reply = _REPLIES[(number * 7 + position) % len(_REPLIES)]
        prompt_utc = iso(moment)
        moment += timedelta(seconds=20 + (number + position) % 40)
        reply_utc = iso(moment)
        turn_id = new_id(_unix_ms(moment))
        input_tokens, output_tokens = len(prompt) // 4 + 40 * position, len(reply) // 4
        turn_rows.append((turn_id, conversation_id, parent, position, prompt, reply, MODEL,
                          f"chatcmpl-seed{number:08d}{position:04d}", prompt_utc, reply_utc,
                          900 + (number + position) % 700, input_tokens, output_tokens))
        usage_rows.append((owner_id, owner_client, conversation_id, ACCOUNT, MODEL, "api", "ok",
                           reply_utc, 900 + (number + position) % 700, input_tokens,
                           output_tokens))
        parent = turn_id
    conversations.append((conversation_id, owner_id, f"Seeded conversation {number}", "pool",
                          ACCOUNT, MODEL, None, None, turns, iso(start), iso(moment)))
    return conversation_id


def seed(db: Path, *, users: int, conversations: int, turns: int, probe_conversations: int,
         probe_turns: int, usage: bool = True, log: bool = True) -> dict[str, Any]:
    started = time.perf_counter()
    loader = SqliteBulkLoader(db)
    now = datetime.now(UTC)
    year_ago = now - timedelta(days=365)

    client_rows = [_principal_row("client", f"seed-client-{c}", None, None, iso(year_ago))[0]
                   for c in range(CLIENTS if users else 1)]
    client_ids = loader.add_principals(client_rows)
    user_rows = [_principal_row("user", f"seed user {u}", client_ids[u % len(client_ids)],
                                f"seed-{u}", iso(year_ago))[0] for u in range(users)]
    probe_row, probe_key = _principal_row("user", "bench probe", client_ids[0], "bench-probe",
                                          iso(year_ago))
    *user_ids, probe_id = loader.add_principals([*user_rows, probe_row])
    owners = [(user_ids[u], client_ids[u % len(client_ids)]) for u in range(users)]

    per_conversation = max(1, turns // conversations) if conversations else 0
    span = timedelta(days=360) / max(1, conversations)
    done = 0
    while done < conversations:
        batch = min(BATCH_CONVERSATIONS, conversations - done)
        conv_rows: list[tuple[Any, ...]] = []
        turn_rows: list[tuple[Any, ...]] = []
        usage_rows: list[tuple[Any, ...]] = []
        for n in range(done, done + batch):
            _conversation_rows(owners[n % len(owners)], n, per_conversation, year_ago + span * n,
                               conv_rows, turn_rows, usage_rows)
        loader.add_conversations(conv_rows, turn_rows, usage_rows if usage else ())
        done += batch
        if log:
            print(f"seed: {done:,} conversations, {done * per_conversation:,} turns, "
                  f"{time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)

    conv_rows, turn_rows, usage_rows = [], [], []
    probe_ids = [
        _conversation_rows((probe_id, client_ids[0]), 10**7 + p, probe_turns,
                           now - timedelta(hours=probe_conversations - p), conv_rows, turn_rows,
                           usage_rows)
        for p in range(probe_conversations)
    ]
    loader.add_conversations(conv_rows, turn_rows, usage_rows if usage else ())
    counts = loader.counts()
    loader.close()
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    return {"probe_key": probe_key, "probe_id": probe_id, "probe_conversations": probe_ids,
            "counts": counts, "seconds": time.perf_counter() - started, "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, type=Path)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--turns", type=int, default=1_000_000)
    parser.add_argument("--probe-conversations", type=int, default=10)
    parser.add_argument("--probe-turns", type=int, default=10)
    parser.add_argument("--no-usage", action="store_true", help="do not add a usage row a turn")
    parser.add_argument("--keys-out", type=Path)
    args = parser.parse_args()
    if args.conversations and not args.users:
        parser.error("conversations need users to own them")
    args.db.parent.mkdir(parents=True, exist_ok=True)
    result = seed(args.db, users=args.users, conversations=args.conversations, turns=args.turns,
                  probe_conversations=args.probe_conversations, probe_turns=args.probe_turns,
                  usage=not args.no_usage)
    if args.keys_out:
        args.keys_out.write_text(json.dumps(result), encoding="utf-8")
    summary = {k: v for k, v in result.items() if k not in ("probe_key", "probe_conversations")}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
