"""Model titles asked after the reply, several new conversations in one upstream call.

A title asked beside each reply doubles the upstream calls of new conversations (and was a
third of a new ``/api/chat`` conversation's CPU, issue 14). With ``[chat] api_titles =
"batched"`` a new conversation is answered and stored with a title cut from its prompt, then
queued here. One task asks the model for the titles of every queued conversation of an
account at once (up to ``title_batch_size`` a call, numbered lines), and each stored title is
replaced by the model's when it comes. Under load many conversations share a call; when
conversations come a few a second, a title waits up to ``title_batch_wait_s`` for others to
share its call rather than each making its own. A failed or refused call leaves the
prompt-cut titles as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque

from .accounts import Account, AccountPool, SlotRefused
from .billing import cost_of
from .budgets import Budgets
from .clock import iso, utc_now
from .config import Settings
from .history import estimate_tokens
from .models import Principal
from .records import frozen_record
from .storage.conversations import ConversationRepo, UsageRecord, usage_statement
from .storage.database import Statement
from .storage.spend import SpendRow
from .titles import TITLE_MAX_TOKENS, clean_title, title_messages
from .upstream import Completion, Message, UpstreamFailure, complete

log = logging.getLogger(__name__)

BATCH_INSTRUCTION = (
    "You write titles. Below are the first messages of several conversations, numbered. For "
    "each, write a short title (at most six words). Reply with one line per message, in the "
    "same order, as the number, a dot and the title: no quotes, nothing else."
)
PROMPT_CHARS = 500
"""Of each prompt, in a batch (a single title is asked from the first 2,000, as beside)."""
QUEUED_BATCHES = 64
"""How many calls' worth of titles may wait (1,024 at the default ``title_batch_size``)."""
CLOSE_GRACE_S = 3.0
"""How long a stopping gateway waits for the titles it still holds."""
DROP_LOG_EVERY = 1000
"""A full queue is logged at its first conversation kept untitled and every so many after."""
_NUMBERED = re.compile(r"^\s*\**\s*(\d+)\s*[.):\-]\s*(.+)$")


@frozen_record
class Pending:
    conversation_id: str
    prompt: str
    prompt_title: str
    account: str
    model: str
    principal: Principal
    """Whose conversation: the title's call is their use, counted against their budgets."""
    endpoint: str = "api"


class TitleBatcher:
    def __init__(self, settings: Settings, pool: AccountPool,
                 conversations: ConversationRepo, budgets: Budgets) -> None:
        self.settings = settings
        self.pool = pool
        self.conversations = conversations
        self.budgets = budgets
        # One queue an (account, model): a batch is asked of one model, taken from the front
        # of its queue in O(batch), whatever the backlog (a single list scanned and rebuilt
        # for each batch grew quadratic under load, beside the requests it was meant to spare).
        self._queues: dict[tuple[str, str], deque[Pending]] = {}
        self._since: dict[tuple[str, str], float] = {}
        """When each queue's oldest title began to wait (loop time)."""
        self._queued = 0
        self._arrived = asyncio.Event()
        """Set when a queue fills a batch, or ``idle()`` wants every title now."""
        self._now = False
        self._worker: asyncio.Task[None] | None = None
        self.calls = 0
        """Upstream calls made for titles (for tests and the benchmark's curious)."""
        self.dropped = 0
        """Conversations that kept the prompt's title because the queue was full."""

    @property
    def limit(self) -> int:
        """Titles that may wait at most: ``QUEUED_BATCHES`` calls' worth."""
        return QUEUED_BATCHES * self.settings.chat.title_batch_size

    @property
    def queued(self) -> int:
        return self._queued

    def add(self, item: Pending) -> None:
        """Queue a model title for ``item``. A full queue (new conversations come faster than
        the model titles them, for long) keeps the prompt's title instead: memory stays
        bounded and the titles that wait are not delayed further."""
        if self._queued >= self.limit:
            if not self.dropped % DROP_LOG_EVERY:
                log.warning("titles queue full (%d waiting): new conversations keep their "
                            "prompt's title (%d so far)", self._queued, self.dropped + 1)
            self.dropped += 1
            return
        key = (item.account, item.model)
        waiting = self._queues.get(key)
        if waiting is None:
            waiting = self._queues[key] = deque()
            self._since[key] = asyncio.get_running_loop().time()
        waiting.append(item)
        self._queued += 1
        if len(waiting) >= self.settings.chat.title_batch_size:
            self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="titles")

    async def idle(self) -> None:
        """Every queued title asked for now, without waiting for others to share the calls,
        and stored (tests, and a gateway that stops)."""
        self._now = True
        self._arrived.set()
        try:
            while self._worker is not None and not self._worker.done():
                await asyncio.shield(self._worker)
        finally:
            self._now = False

    async def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Titles still waiting for others to share their call are asked now, for at most
        ``grace_s`` (a stopping gateway); then the worker stops, and what was not asked
        keeps the prompt's title."""
        if self._queued and grace_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await self.idle()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def _work(self) -> None:
        while self._queues:
            key = await self._next_batch()
            waiting = self._queues.pop(key)
            size = min(self.settings.chat.title_batch_size, len(waiting))
            batch = [waiting.popleft() for _ in range(size)]
            if waiting:
                # One with more left goes to the back (a busy model does not hold the others'
                # titles back); what is left waits again for others to share its call, unless
                # it already fills one.
                self._queues[key] = waiting
                self._since[key] = asyncio.get_running_loop().time()
            else:
                del self._since[key]
            self._queued -= size
            try:
                await self._title(batch)
            except Exception:  # a title is never worth a failure: the prompt's stays
                log.exception("titles for %d conversations failed", len(batch))

    async def _next_batch(self) -> tuple[str, str]:
        """The (account, model) whose titles go next: the first with a full batch, or else
        the longest-waiting once it has waited ``title_batch_wait_s``. Under load batches
        fill at once; when conversations come a few a second, they share a call rather than
        each making its own."""
        size = self.settings.chat.title_batch_size
        loop = asyncio.get_running_loop()
        while True:
            self._arrived.clear()
            for key, waiting in self._queues.items():
                if len(waiting) >= size:
                    return key
            oldest = next(iter(self._queues))
            left = self._since[oldest] + self.settings.chat.title_batch_wait_s - loop.time()
            if left <= 0 or self._now:
                return oldest
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._arrived.wait()

    async def _title(self, batch: list[Pending]) -> None:
        account = self.pool.get(batch[0].account)
        if account is None:
            return
        target = account.target(batch[0].model)
        messages = title_messages(batch[0].prompt) if len(batch) == 1 else batch_messages(batch)
        try:
            async with account.slot(self.settings.chat.slot_wait_s, is_reply=False):
                self.calls += 1
                completion = await complete(
                    target, messages, purpose="title",
                    options={"max_tokens": TITLE_MAX_TOKENS * len(batch), "temperature": 0.2})
        except (SlotRefused, UpstreamFailure) as exc:
            log.info("titles of %d conversations on %s not asked (%s); the prompts' stay",
                     len(batch), account.name, getattr(exc, "kind", "busy"))
            return
        titles = ([clean_title(completion.text)] if len(batch) == 1
                  else parse_numbered(completion.text, len(batch)))
        statements, rows = self._count(account, batch, messages, completion, titles)
        # The titles and their use in one transaction: one commit for the batch, not one a
        # conversation.
        await self.conversations.replace_titles(
            [(item.conversation_id, item.prompt_title, title)
             for item, title in zip(batch, titles, strict=True)
             if title and title != item.prompt_title], statements)
        await self.budgets.settled(rows, None)


    def _count(self, account: Account, batch: list[Pending], messages: list[Message],
               completion: Completion, titles: list[str | None]
               ) -> tuple[list[Statement], list[SpendRow]]:
        """The call's use, shared among the members whose titles it made (the prompt's
        tokens by the length of each one's line, the reply's by each title's): a usage row
        of each one's with its cost, and what it adds to their running totals."""
        estimated = completion.input_tokens is None or completion.output_tokens is None
        asked = completion.input_tokens if completion.input_tokens is not None else sum(
            estimate_tokens(str(m.get("content") or "")) for m in messages)
        written = completion.output_tokens if completion.output_tokens is not None else \
            estimate_tokens(completion.text)
        inputs = _shares(asked, [len(p.prompt[:PROMPT_CHARS]) + 1 for p in batch])
        outputs = _shares(written, [len(t or "") + 1 for t in titles])
        now = iso(utc_now())
        statements: list[Statement] = []
        rows: list[SpendRow] = []
        for item, used_in, used_out in zip(batch, inputs, outputs, strict=True):
            cost = cost_of(account.settings, completion.model or item.model, used_in,
                           used_out) or 0.0
            statements.append(usage_statement(UsageRecord(
                principal_id=item.principal.id, client_id=item.principal.client_id,
                conversation_id=item.conversation_id, account=account.name,
                model=completion.model or item.model, endpoint=item.endpoint, outcome="ok",
                created_utc=now, duration_ms=0, input_tokens=used_in, output_tokens=used_out,
                cost=cost, estimated=estimated, purpose="title")))
            rows += self.budgets.spend_rows(item.principal, 0, used_in + used_out, cost)
        merged: dict[tuple[int, str], list[float]] = {}
        for scope_id, period, _, tokens, cost in rows:
            total = merged.setdefault((scope_id, period), [0, 0.0])
            total[0] += tokens
            total[1] += cost
        statements += self.budgets.statements(
            [(k[0], k[1], 0, int(v[0]), v[1]) for k, v in merged.items()], None)
        return statements, rows


def _shares(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights``, in whole numbers that add up to it."""
    whole = sum(weights) or 1
    shares = [total * w // whole for w in weights]
    for n in range(total - sum(shares)):
        shares[n % len(shares)] += 1
    return shares


def batch_messages(batch: list[Pending]) -> list[Message]:
    lines = [f"{n}. {' '.join(p.prompt.split())[:PROMPT_CHARS]}"
             for n, p in enumerate(batch, 1)]
    return [{"role": "system", "content": BATCH_INSTRUCTION},
            {"role": "user", "content": "\n".join(lines)}]


def parse_numbered(text: str, n: int) -> list[str | None]:
    """Titles by number from the model's lines; None where a number is missing or empty."""
    titles: list[str | None] = [None] * n
    for line in text.splitlines():
        match = _NUMBERED.match(line)
        if match and 1 <= int(match.group(1)) <= n and titles[int(match.group(1)) - 1] is None:
            titles[int(match.group(1)) - 1] = clean_title(match.group(2))
    return titles
