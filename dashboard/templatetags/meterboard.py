"""Template helpers: money as people read it, moments in the workspace's time zone, links that keep
the workspace in the URL, and a form field's value for an input written by hand."""

from __future__ import annotations

from datetime import datetime
from datetime import timezone as dt_timezone
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode

from django import template
from django.urls import reverse
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.html import format_html

from core import money

register = template.Library()


def _decimal(value) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


@register.filter
def usd(value) -> str:
    """$1,234.56 (half-up to cents, for display; statements keep 6 places)."""
    return money.usd(_decimal(value))


@register.filter
def usd_precise(value) -> str:
    """A unit price with the places it needs: $0.004, $0.0048, $0.169, $5.00."""
    return money.usd_precise(_decimal(value))


@register.filter
def cents_usd(value) -> str:
    """Integer cents as dollars."""
    return "—" if value is None else money.usd_cents(int(value))


@register.filter
def usd_from_micros(value) -> str:
    """Integer micro-dollars as dollars."""
    return "—" if value is None else money.usd(money.from_micros(int(value)))


@register.filter
def usd_from_micros_precise(value) -> str:
    return "—" if value is None else money.usd_precise(money.from_micros(int(value)))


@register.filter
def thousands(value) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


@register.filter
def when(value: datetime | None, fmt: str = "M j, Y H:i") -> str:
    """A moment as the workspace reads it: in the page's active time zone (the workspace's, see
    dashboard.access.workspace_page), the UTC time on hover and in `datetime`. "" for None, so
    that `|when|default:"never"` reads naturally."""
    if not value:
        return ""
    utc = value.astimezone(dt_timezone.utc)
    return format_html(
        '<time datetime="{}" title="{} UTC">{}</time>',
        utc.isoformat().replace("+00:00", "Z"),
        date_format(utc, "Y-m-d H:i:s"),
        date_format(timezone.localtime(value), fmt),
    )


@register.filter
def bar_width(value) -> str:
    """A percentage for a CSS width, kept within 0–100."""
    number = _decimal(value) or Decimal(0)
    return f"{min(max(number, Decimal(0)), Decimal(100)):.1f}"


@register.simple_tag(takes_context=True)
def wsurl(context, name: str, *args, **query) -> str:
    """The URL of a dashboard page of the current workspace: `?workspace=<slug>` (and `query`)."""
    url = reverse(name, args=args)
    access = context.get("access")
    params = {"workspace": access.workspace.slug} if access is not None else {}
    params.update({k: v for k, v in query.items() if v not in (None, "")})
    if not params:
        return url
    return f"{url}?{urlencode(params)}"


@register.filter
def input_value(bound_field) -> str:
    """A form field's value as its widget would write it in `value="…"`: a day as YYYY-MM-DD (not
    in the page's date format), what was sent as sent; for inputs a template writes itself, to
    give them attributes such as aria-invalid."""
    value = bound_field.field.widget.format_value(bound_field.value())
    return "" if value is None else str(value)
