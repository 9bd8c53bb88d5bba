"""Plain factories: make_x(**kw) with defaults a test can override."""

from decimal import Decimal

from channels_app.models import Channel
from groups.models import Group, User
from tokens.issuing import create_token


def make_group(name="pro", **kw):
    kw.setdefault("multiplier", Decimal("1"))
    kw.setdefault("user_selectable", True)
    group, _ = Group.objects.update_or_create(name=name, defaults=kw)
    return group


def make_user(username="alice", group=None, balance=Decimal("100"), **kw):
    user = User.objects.create_user(username=username, password=kw.pop("password", "pw-alice-1"))
    if group is not None:
        user.group = group
    user.balance = balance
    for field, value in kw.items():
        setattr(user, field, value)
    user.save()
    return user


def make_channel(name="ch-a", groups=(), key="sk-upstream-secret", **kw):
    kw.setdefault("base_url", "http://127.0.0.1:9/v1")
    kw.setdefault("model_names", "gpt-4o-mini")
    channel = Channel(name=name, **kw)
    channel.set_key(key)
    channel.save()
    if groups:
        channel.groups.set(groups)
    return channel


def make_token(owner, group_name=None, **kw):
    """Return (token, key)."""
    return create_token(owner, group_name=group_name, **kw)


def table_entry(channel):
    """The routing table's entry for a channel (the relay routes and bills from it); the
    channel must serve a group."""
    from channels_app.routing_table import get_table

    entries = get_table().channels_by_group.values()
    return next(entry for group in entries for entry in group if entry.id == channel.pk)
