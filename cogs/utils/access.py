"""Who may use the bot, who has plus, who may use /admin: decided from ids alone.

Roles are read at every request, so a member who loses a role loses what it gave at their next
request: access (``allowed_role_ids``), plus (``plus_role_ids``), admin (``admin_role_ids``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from core.config import DiscordSettings


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    admin_channel_id: int = 0
    admin_user_ids: frozenset[int] = frozenset()
    admin_role_ids: frozenset[int] = frozenset()
    allowed_role_ids: frozenset[int] = frozenset()
    plus_role_ids: frozenset[int] = frozenset()

    @classmethod
    def from_settings(cls, settings: DiscordSettings) -> AccessPolicy:
        return cls(
            admin_channel_id=settings.admin_channel_id,
            admin_user_ids=frozenset(settings.admin_user_ids),
            admin_role_ids=frozenset(settings.admin_role_ids),
            allowed_role_ids=frozenset(settings.allowed_role_ids),
            plus_role_ids=frozenset(settings.plus_role_ids),
        )

    @property
    def roles_give_plus(self) -> bool:
        return bool(self.plus_role_ids)

    def may_use(self, role_ids: Iterable[int]) -> bool:
        """Every member when no role is required, else members with one of the roles."""
        return not self.allowed_role_ids or not self.allowed_role_ids.isdisjoint(role_ids)

    def member_refusal(self, role_ids: Iterable[int]) -> str | None:
        """The polite refusal for a member without an allowed role, or None."""
        if self.may_use(role_ids):
            return None
        roles = ", ".join(f"<@&{r}>" for r in sorted(self.allowed_role_ids))
        return (f"Sorry, this bot is open to members with one of these roles: {roles}. "
                "Ask a moderator if you think you should have access.")

    def refusal(self, user_id: int, role_ids: Iterable[int]) -> str | None:
        """Why this member may not use the bot, or None: admins always may."""
        roles = list(role_ids)
        return None if self.is_admin(user_id, roles) else self.member_refusal(roles)

    def plus_for(self, role_ids: Iterable[int]) -> bool | None:
        """Plus as the roles give it, or None when roles do not decide plus here (then only
        ``/admin plus`` does)."""
        if not self.plus_role_ids:
            return None
        return not self.plus_role_ids.isdisjoint(role_ids)

    def is_admin(self, user_id: int, role_ids: Iterable[int]) -> bool:
        return user_id in self.admin_user_ids or not self.admin_role_ids.isdisjoint(role_ids)

    def admin_refusal(self, user_id: int, role_ids: Iterable[int],
                      channel_id: int | None) -> str | None:
        """Why this member may not use /admin here, or None when they may."""
        if not self.admin_channel_id:
            return "Admin commands are turned off: no admin channel is configured."
        if not self.is_admin(user_id, list(role_ids)):
            return "Only the bot's admins may use /admin."
        if channel_id != self.admin_channel_id:
            return f"Admin commands work only in <#{self.admin_channel_id}>."
        return None
