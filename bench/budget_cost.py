"""What a budget check costs per request, in process: ``Budgets.hold`` before the call and the
running totals after it (the statement built and counted), for a member without any budget and
for one with a daily and a monthly budget, on SQLite (totals in memory).

    python -m bench.budget_cost [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from core.budgets import Budgets
from core.config import settings_from_dict
from core.storage import storage_for


async def _measure(requests: int, limits: dict[str, int]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        settings = settings_from_dict({
            "storage": {"path": str(Path(folder) / "bench.db")},
            "limits": {"free": limits}})
        storage = storage_for(settings.storage)
        await storage.open()
        try:
            principal, _ = await storage.principals.create("user", "bench")
            budgets = Budgets(settings, storage)
            await budgets.open()
            start = time.perf_counter()
            for _ in range(requests):
                hold = await budgets.hold(principal, tokens=1000, cost=0.0, ttl_s=60)
                rows = budgets.spend_rows(principal, 1, 120, 0.0)
                budgets.statements(rows, hold)
                await budgets.settled(rows, hold)
            return (time.perf_counter() - start) / requests * 1e6
        finally:
            await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    none = asyncio.run(_measure(args.requests, {}))
    some = asyncio.run(_measure(args.requests, {"tokens_per_day": 10**12,
                                                "tokens_per_month": 10**12}))
    print(f"budget check + totals per request: {none:.1f} µs without a budget, "
          f"{some:.1f} µs with a daily and a monthly one (SQLite, in process)")


if __name__ == "__main__":
    main()
