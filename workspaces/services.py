"""Writes for tenancy: workspaces, members, API keys."""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, models, transaction
from django.utils import timezone

from core import logcontext

from .models import ALL_SCOPES, ApiKey, Membership, Workspace

logger = logging.getLogger(__name__)

SECRET_MARK = "mbk_"
# last_used_at is written at most about this often per key, so a key in hot use costs one
# UPDATE a minute, not one per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class InvalidScopes(ValueError):
    pass


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    secret: str  # shown once, never stored


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def workspace_create(*, slug: str, owner_email: str, name: str = "") -> Workspace:
    """Create a workspace owned by `owner_email`, creating that user if needed.

    Idempotent for the same slug and owner: an existing workspace is returned unchanged.
    """
    User = get_user_model()
    owner, _ = User.objects.get_or_create(
        username=owner_email.lower(), defaults={"email": owner_email.lower()}
    )
    workspace, _ = Workspace.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    Membership.objects.get_or_create(
        workspace=workspace, user=owner, defaults={"role": Membership.Role.OWNER}
    )
    return workspace


def api_key_create(
    *, workspace: Workspace, name: str, scopes: list[str] | tuple[str, ...] | None = None
) -> IssuedKey:
    """Issue a key for `workspace`. The returned secret is the only copy anywhere."""
    scopes = list(scopes) if scopes else list(ALL_SCOPES)
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise InvalidScopes(
            f"Unknown scope(s): {', '.join(unknown)}. Choose from: {', '.join(ALL_SCOPES)}."
        )
    prefix = secrets.token_hex(6)  # 12 hex characters, unique index
    secret = f"{SECRET_MARK}{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        workspace=workspace,
        name=name,
        prefix=prefix,
        secret_hash=_hash_secret(secret),
        scopes=sorted(set(scopes)),
    )
    return IssuedKey(api_key=api_key, secret=secret)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revoke a key; it answers 401 from the next request on in this process, and within
    KEY_CACHE_SECONDS in every other one. Revoking twice is a no-op."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    key_cache_forget(api_key.prefix)
    return api_key


# Each process remembers the active keys it has seen for this long: ingestion's hot path then
# costs no database round trip to authenticate. The bound on staleness: a key revoked (or whose
# scopes or workspace changed) in another process is honoured here within this many seconds.
KEY_CACHE_SECONDS = 1.0
KEY_CACHE_SIZE = 10_000  # prefixes remembered at most (then forgotten all at once)
_key_cache: dict[str, tuple[float, ApiKey]] = {}


def key_cache_forget(prefix: str | None = None) -> None:
    """Forget one key (after a change in this process), or every key."""
    if prefix is None:
        _key_cache.clear()
    else:
        _key_cache.pop(prefix, None)


def api_key_authenticate(secret: str) -> ApiKey | None:
    """The active key whose secret this is, or None (unknown, malformed or revoked).

    Read from the database with one hand-written query (a third of the ORM's cost on this hot
    path), then remembered for KEY_CACHE_SECONDS: a key revoked elsewhere gets 401 within a
    second. The secret is checked against its hash on every request."""
    if not secret.startswith(SECRET_MARK):
        return None
    prefix, _, rest = secret[len(SECRET_MARK) :].partition("_")
    if not prefix or not rest:
        return None
    now = time.monotonic()
    cached = _key_cache.get(prefix)
    if cached is not None and now - cached[0] < KEY_CACHE_SECONDS:
        api_key = cached[1]
    else:
        api_key = _active_key_with_workspace(prefix)
        if api_key is None:
            _key_cache.pop(prefix, None)
            return None
        if len(_key_cache) >= KEY_CACHE_SIZE:
            _key_cache.clear()
        _key_cache[prefix] = (now, api_key)
    if not hmac.compare_digest(api_key.secret_hash, _hash_secret(secret)):
        return None
    _touch_last_used(api_key)
    logcontext.bind(workspace=api_key.workspace.slug, api_key=api_key.prefix)
    return api_key


@functools.cache
def _key_query() -> tuple[str, list[tuple[Any, list]], int]:
    columns = []
    for alias, model in (("k", ApiKey), ("w", Workspace)):
        for model_field in model._meta.concrete_fields:
            col = model_field.get_col(model._meta.db_table)
            converters = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
            columns.append((f"{alias}.{connection.ops.quote_name(model_field.column)}", model_field, col, converters))
    sql = (
        f"SELECT {', '.join(c[0] for c in columns)} FROM {ApiKey._meta.db_table} k "
        f"JOIN {Workspace._meta.db_table} w ON w.id = k.workspace_id "
        "WHERE k.prefix = %s AND k.revoked_at IS NULL"
    )
    return sql, [(col, converters) for _, _, col, converters in columns], len(ApiKey._meta.concrete_fields)


def _active_key_with_workspace(prefix: str) -> ApiKey | None:
    sql, converters, split = _key_query()
    with connection.cursor() as cursor:
        cursor.execute(sql, [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    values = []
    for value, (col, functions) in zip(row, converters, strict=True):
        for convert in functions:
            value = convert(value, col, connection)
        values.append(value)
    api_key = ApiKey.from_db("default", [f.attname for f in ApiKey._meta.concrete_fields], values[:split])
    api_key.workspace = Workspace.from_db(
        "default", [f.attname for f in Workspace._meta.concrete_fields], values[split:]
    )
    return api_key


def _touch_last_used(api_key: ApiKey) -> None:
    """Record that the key was used, best effort, never failing or slowing the request's own work.

    The write runs in its own savepoint (or its own transaction, in autocommit), so a refusal
    leaves the request's transaction usable, and any database error is logged and dropped: on a
    read-only database, a hot standby or during a fail-over, keys still authenticate and reads
    still answer. Bound on staleness: while the database takes writes, last_used_at is at most
    LAST_USED_RESOLUTION (60 s) behind the key's latest request; while it refuses writes, use is
    not recorded, and the first request after writes return records it.
    """
    now = timezone.now()
    if api_key.last_used_at is not None and now - api_key.last_used_at < LAST_USED_RESOLUTION:
        return
    try:
        _write_last_used(api_key.pk, now)
    except DatabaseError as exc:
        logger.warning("last_used_at of key %s not recorded: %s", api_key.pk, exc)
        return
    api_key.last_used_at = now


def _write_last_used(pk: int, now: datetime) -> None:
    with transaction.atomic():
        # Only forward: a slow request never moves the time back over a newer one.
        ApiKey.objects.filter(pk=pk).filter(
            models.Q(last_used_at__isnull=True) | models.Q(last_used_at__lt=now)
        ).update(last_used_at=now)


# --- Members -------------------------------------------------------------------------------------


class MembershipError(ValueError):
    """A change of members that would break a rule (a workspace always keeps an owner)."""


@dataclass(frozen=True)
class AddedMember:
    membership: Membership
    new_user: bool  # the account was created now, with no password (they set one from the invitation)


@transaction.atomic
def member_add(*, workspace: Workspace, email: str, role: str) -> AddedMember:
    """Add the person with this e-mail to the workspace, creating their account (with no usable
    password) when there is none. Adding someone who is already a member is refused."""
    if role not in Membership.Role.values:
        raise MembershipError(f"Unknown role {role!r}.")
    email = email.strip().lower()
    User = get_user_model()
    user = User.objects.filter(username=email).first() or User.objects.filter(email__iexact=email).first()
    new_user = user is None
    if new_user:
        user = User(username=email, email=email)
        user.set_unusable_password()
        user.save()
    membership, created = Membership.objects.get_or_create(workspace=workspace, user=user, defaults={"role": role})
    if not created:
        raise MembershipError(f"{email} is already a member of this workspace ({membership.get_role_display()}).")
    return AddedMember(membership, new_user)


def _locked_members(workspace_id: int) -> list[Membership]:
    """The workspace's memberships, locked (fresh roles), so two owners cannot demote or remove
    each other at the same time and leave the workspace without one."""
    return list(Membership.objects.select_for_update().filter(workspace_id=workspace_id).order_by("pk"))


def _is_last_owner(members: list[Membership], membership: Membership) -> bool:
    owners = [m.pk for m in members if m.role == Membership.Role.OWNER]
    return owners == [membership.pk]


@transaction.atomic
def member_role_set(*, membership: Membership, role: str) -> Membership:
    """Change a member's role. A workspace keeps at least one owner."""
    if role not in Membership.Role.values:
        raise MembershipError(f"Unknown role {role!r}.")
    members = _locked_members(membership.workspace_id)
    if role != Membership.Role.OWNER and _is_last_owner(members, membership):
        raise MembershipError("A workspace needs an owner: make someone else an owner first.")
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def member_remove(*, membership: Membership) -> None:
    """Remove a member (their account stays). The last owner cannot be removed."""
    if _is_last_owner(_locked_members(membership.workspace_id), membership):
        raise MembershipError("The last owner cannot be removed: make someone else an owner first.")
    membership.delete()
