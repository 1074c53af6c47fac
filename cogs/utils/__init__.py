"""Helpers shared by the cogs. ``text``, ``throttle``, ``stream``, ``access``, ``locks`` and
``format`` are pure logic with no Discord objects; ``replies`` and ``paging`` speak discord.py."""
