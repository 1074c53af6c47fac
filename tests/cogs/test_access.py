"""Who may use the bot, who has plus, who may use /admin: ids in, decision out."""

from __future__ import annotations

from cogs.utils.access import AccessPolicy
from core.config import DiscordSettings

MEMBER, PLUS, ADMIN_ROLE, OTHER = 11, 12, 13, 14
ADMIN_USER, CHANNEL, ADMIN_CHANNEL = 1, 50, 51

policy = AccessPolicy.from_settings(DiscordSettings(
    admin_channel_id=ADMIN_CHANNEL, admin_user_ids=[ADMIN_USER], admin_role_ids=[ADMIN_ROLE],
    allowed_role_ids=[MEMBER], plus_role_ids=[PLUS],
))


def test_allowed_roles() -> None:
    assert policy.may_use([MEMBER])
    assert policy.may_use([OTHER, MEMBER])
    assert not policy.may_use([OTHER])
    assert not policy.may_use([])
    refusal = policy.member_refusal([OTHER])
    assert refusal is not None and "<@&11>" in refusal and "Sorry" in refusal
    assert policy.member_refusal([MEMBER]) is None


def test_no_allowed_roles_means_everyone() -> None:
    open_policy = AccessPolicy()
    assert open_policy.may_use([])
    assert open_policy.refusal(99, []) is None


def test_admins_are_never_refused_the_bot() -> None:
    assert policy.refusal(ADMIN_USER, []) is None
    assert policy.refusal(2, [ADMIN_ROLE]) is None
    assert policy.refusal(2, []) is not None


def test_plus_follows_roles_only_when_plus_roles_are_configured() -> None:
    assert policy.plus_for([MEMBER, PLUS]) is True
    assert policy.plus_for([MEMBER]) is False  # a member who lost the role loses plus
    assert AccessPolicy().plus_for([PLUS]) is None  # no plus roles: /admin plus decides


def test_admin_refusals() -> None:
    assert policy.admin_refusal(ADMIN_USER, [], ADMIN_CHANNEL) is None
    assert policy.admin_refusal(2, [ADMIN_ROLE], ADMIN_CHANNEL) is None
    assert policy.admin_refusal(2, [MEMBER], ADMIN_CHANNEL) == (
        "Only the bot's admins may use /admin.")
    assert policy.admin_refusal(ADMIN_USER, [], CHANNEL) == (
        f"Admin commands work only in <#{ADMIN_CHANNEL}>.")
    off = AccessPolicy(admin_user_ids=frozenset({ADMIN_USER}))
    assert "turned off" in (off.admin_refusal(ADMIN_USER, [], CHANNEL) or "")
