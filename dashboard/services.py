"""Writes started from the dashboard: inviting a member (more than one app's service), and
remembering a person's choice of period on the overview."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.db import DEFAULT_DB_ALIAS
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from workspaces.models import Membership, Workspace
from workspaces.services import AddedMember, member_add

from .forms import Period
from .models import UserPreference

logger = logging.getLogger(__name__)


def member_invite(*, workspace: Workspace, email: str, role: str, invited_by) -> AddedMember:
    """Add a member and e-mail them (through the configured backend). A new account has no
    password: its e-mail is an invitation whose link sets one (Django's password-reset token, so
    it expires after PASSWORD_RESET_TIMEOUT and works once). An existing account is told where to
    sign in. A mail server that is down does not undo the membership: the person can ask for a
    new link on the sign-in page ("Forgot your password?")."""
    added = member_add(workspace=workspace, email=email, role=role)
    user = added.membership.user
    context = {
        "workspace": workspace,
        "role": Membership.Role(role).label,
        "invited_by": invited_by.get_full_name() or invited_by.email,
        "new_user": added.new_user,
        "sign_in_url": settings.SITE_URL + reverse("login"),
    }
    if added.new_user:
        uid = urlsafe_base64_encode(force_bytes(user.pk))
        token = default_token_generator.make_token(user)
        context["set_password_url"] = settings.SITE_URL + reverse(
            "password_reset_confirm", kwargs={"uidb64": uid, "token": token}
        )
    subject = f"You have been added to {workspace.name} on Meterboard"
    try:
        send_mail(
            subject,
            render_to_string("dashboard/emails/invite.txt", context),
            None,
            [user.email],
            html_message=render_to_string("dashboard/emails/invite.html", context),
        )
    except Exception:  # the membership stands; the reset page sends a new link
        logger.exception("Could not e-mail the invitation of %s to %s", user.email, workspace.slug)
    return added


def overview_period_remember(*, user, period: Period) -> bool:
    """Remembers `period` as `user`'s choice on the overview (a preset by its key, so that its days
    follow today; a custom range by its days), unless it is the one remembered already: viewing
    the same period again writes nothing. Returns whether it wrote."""
    choice = {
        "overview_period": period.key,
        "overview_start": period.start if period.key == "custom" else None,
        "overview_end": period.end if period.key == "custom" else None,
    }
    # From the primary, as every read before a write: a replica's copy may be a choice behind.
    stored = UserPreference.objects.using(DEFAULT_DB_ALIAS).filter(user=user).values(*choice).first()
    if stored == choice:
        return False
    UserPreference.objects.update_or_create(user=user, defaults=choice)
    return True
