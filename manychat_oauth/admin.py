"""The Django admin for connections: which are broken, which are about to break, and why.

Every row is in exactly one *health state*, decided in the database (so the
filter, the ordering and the summary agree and cost one query each, at any
table size). Tokens are never loaded for display: the pages say whether a token
is set from an ``IS NULL`` test, so neither plaintext nor ciphertext can leak.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections import Counter
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import flatten_fieldsets
from django.db.models import BooleanField, Case, Count, ExpressionWrapper, F, IntegerField, Q, QuerySet, Value, When
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from . import health, refresh, services
from .conf import app_settings
from .exceptions import ManychatOAuthError
from .models import ManychatConnection
from .signals import reauth_required

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

    ManychatConnectionAdminBase = admin.ModelAdmin[ManychatConnection]
else:
    ManychatConnectionAdminBase = admin.ModelAdmin

Status = ManychatConnection.Status
AuthType = ManychatConnection.AuthType

#: Actions that call Manychat run in the request: refuse larger selections
#: (the management command handles any number, concurrently).
MAX_ROWS_PER_NETWORK_ACTION = 50
ERROR_PREVIEW_LENGTH = 60


class Health(enum.Enum):
    """A connection's health, most urgent first (the value is the sort rank)."""

    REAUTH = 0
    EXPIRED = 1
    BACKOFF = 2
    EXPIRING = 3
    HEALTHY = 4
    DISCONNECTED = 5

    @property
    def slug(self) -> str:
        return self.name.lower()

    @property
    def label(self) -> StrOrPromise:
        return HEALTH_LABELS[self][0]

    @property
    def help(self) -> StrOrPromise:
        return HEALTH_LABELS[self][1]

    @classmethod
    def from_slug(cls, slug: str | None) -> Health | None:
        return next((state for state in cls if state.slug == slug), None)


HEALTH_LABELS: dict[Health, tuple[StrOrPromise, StrOrPromise]] = {
    Health.REAUTH: (_("Needs re-auth"), _("The provider refused the credentials: the user must connect again.")),
    Health.EXPIRED: (_("Expired"), _("The access token has expired and was not refreshed.")),
    Health.BACKOFF: (_("Failing, backing off"), _("Recent refreshes failed; the next attempt is scheduled.")),
    Health.EXPIRING: (_("Expiring soon"), _("The access token expires within the refresh margin.")),
    Health.HEALTHY: (_("Healthy"), _("Active, not expiring soon, no recent failures.")),
    Health.DISCONNECTED: (_("Disconnected"), _("The credentials were forgotten; nothing to do.")),
}
# Text carries the meaning; colour and symbol only repeat it.
BADGE_STYLE: dict[Health, tuple[str, str]] = {
    Health.REAUTH: ("#ba2121", "✖"),
    Health.EXPIRED: ("#ba2121", "✖"),
    Health.BACKOFF: ("#b35c00", "⚠"),
    Health.EXPIRING: ("#8a6d00", "!"),
    Health.HEALTHY: ("#2e7d32", "✔"),
    Health.DISCONNECTED: ("#666666", "–"),
}


def health_conditions(now: dt.datetime | None = None) -> dict[Health, Q]:
    """One mutually exclusive condition per health state (together they cover every row)."""
    now = now or timezone.now()
    soon = now + dt.timedelta(seconds=app_settings.REFRESH_MARGIN)
    active = Q(status=Status.ACTIVE)
    not_expired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    failing = Q(consecutive_failures__gt=0) | Q(next_attempt_at__gt=now)
    not_failing = Q(consecutive_failures=0) & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    return {
        Health.REAUTH: Q(status=Status.REAUTH_REQUIRED),
        Health.EXPIRED: active & Q(expires_at__lte=now),
        Health.BACKOFF: active & not_expired & failing,
        Health.EXPIRING: active & not_failing & Q(expires_at__gt=now, expires_at__lte=soon),
        Health.HEALTHY: active & not_failing & (Q(expires_at__isnull=True) | Q(expires_at__gt=soon)),
        Health.DISCONNECTED: Q(status=Status.DISCONNECTED),
    }


def urgency_rank(now: dt.datetime | None = None) -> Case:
    """The health state's rank as an expression, for ordering most urgent first."""
    conditions = health_conditions(now)
    return Case(
        *(When(condition, then=Value(state.value)) for state, condition in conditions.items()),
        default=Value(Health.HEALTHY.value),
        output_field=IntegerField(),
    )


def health_counts(queryset: QuerySet[ManychatConnection]) -> dict[Health, int]:
    """How many connections are in each state, in one aggregate query."""
    totals = queryset.aggregate(
        **{state.slug: Count("pk", filter=condition) for state, condition in health_conditions().items()}
    )
    return {state: totals[state.slug] or 0 for state in Health}


def relative(moment: dt.datetime, now: dt.datetime | None = None) -> str:
    """A compact distance from now: "in 12 min", "3 h ago"."""
    delta = (moment - (now or timezone.now())).total_seconds()
    amount = int(abs(delta))
    if amount < 60:
        span = f"{amount} s"
    elif amount < 3600:
        span = f"{amount // 60} min"
    elif amount < 2 * 86400:
        span = f"{amount // 3600} h"
    else:
        span = f"{amount // 86400} d"
    # The sign of the exact difference, so a moment just past reads "0 s ago", not "in 0 s".
    return f"in {span}" if delta >= 0 else f"{span} ago"


def badge(state: Health) -> SafeString:
    colour, symbol = BADGE_STYLE[state]
    return format_html(
        '<span class="manychat-health manychat-health-{}" title="{}" style="display:inline-block;'
        'padding:1px 7px;border-radius:9px;color:#fff;background:{};font-weight:600">'
        '<span aria-hidden="true">{}</span>&nbsp;{}</span>',
        state.slug,
        state.help,
        colour,
        symbol,
        state.label,
    )


def timestamp(
    moment: dt.datetime | None, empty: StrOrPromise, *, detailed: bool = False, prefix: str = ""
) -> SafeString:
    """Relative time, with the exact time on hover (and after it, when ``detailed``)."""
    if moment is None:
        return format_html('<span class="quiet">{}</span>', empty)
    exact = timezone.localtime(moment).isoformat(" ", "seconds")
    text = f"{prefix}{relative(moment)}"
    if detailed:
        return format_html('{} <span class="quiet">({})</span>', text, exact)
    return format_html('<span title="{}">{}</span>', exact, text)


class HealthFilter(admin.SimpleListFilter):
    title = _("health")
    parameter_name = "health"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, StrOrPromise]]:
        return [(state.slug, state.label) for state in Health]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        state = Health.from_slug(self.value())
        return queryset if state is None else queryset.filter(health_conditions()[state])

    def get_facet_counts(self, pk_attname: str, filtered_qs: QuerySet[Any]) -> dict[str, Count]:
        conditions = health_conditions()
        return {f"{i}__c": Count(pk_attname, filter=conditions[state]) for i, state in enumerate(Health)}


def _health_of(obj: ManychatConnection) -> Health:
    rank = getattr(obj, "_urgency", None)
    if rank is None:
        rank = ManychatConnection.objects.filter(pk=obj.pk).annotate(_urgency=urgency_rank()).values("_urgency")[0]
        rank = rank["_urgency"]
    return Health(rank)


def _token_is_set(obj: ManychatConnection, field: str) -> bool:
    """Whether a token column is non-null, without loading (or decrypting) it."""
    annotated = getattr(obj, f"_has_{field}", None)
    if annotated is not None:
        return bool(annotated)
    return ManychatConnection.objects.filter(pk=obj.pk, **{f"{field}__isnull": False}).exists()


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _codes(counter: Counter[str]) -> str:
    return ", ".join(f"{code} ×{n}" if n > 1 else code for code, n in counter.most_common())


@admin.register(ManychatConnection)
class ManychatConnectionAdmin(ManychatConnectionAdminBase):
    list_display = [
        "health_badge",
        "user",
        "page",
        "expiry",
        "last_refreshed",
        "failures",
        "short_last_error",
    ]
    list_display_links = ["health_badge", "page"]
    list_filter = [HealthFilter, "status", "auth_type"]
    list_select_related = ["user"]
    search_fields = ["user__username", "user__email", "page_name", "page_id"]
    search_help_text = _("Search by username, email, page name or page id.")
    actions = ["refresh_tokens_now", "check_connections", "mark_reauth_required", "disconnect_connections"]
    fieldsets = [
        (
            _("Health"),
            {
                "fields": [
                    "health_detail",
                    "last_error",
                    "consecutive_failures",
                    "next_attempt",
                    "last_refreshed_detail",
                    "last_checked",
                    "refresh_in_progress",
                ]
            },
        ),
        (
            _("Connection"),
            {"fields": ["user", "auth_type", "status", "page_name", "page_id", "page_username", "page_category"]},
        ),
        (
            _("Credentials"),
            {
                "description": _("Tokens are stored encrypted and are never shown."),
                "fields": ["access_token_state", "refresh_token_state", "token_type", "scope", "expiry_detail"],
            },
        ),
        (
            _("Page details"),
            {
                "classes": ["collapse"],
                "fields": ["page_timezone", "page_is_pro", "page_avatar_url", "app_id", "app_version"],
            },
        ),
        (
            _("App install"),
            {"classes": ["collapse"], "fields": ["uninstall_suspected_at", "uninstall_signals"]},
        ),
        (_("History"), {"fields": ["created_at", "updated_at"]}),
    ]

    # -- Queryset: annotations instead of token columns ----------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[ManychatConnection]:
        # As ModelAdmin.get_queryset, with the annotations added before the ordering that uses them.
        queryset = (
            self.model._default_manager.get_queryset()
            .defer("access_token", "refresh_token")
            .annotate(
                _urgency=urgency_rank(),
                _has_access_token=ExpressionWrapper(Q(access_token__isnull=False), output_field=BooleanField()),
                _has_refresh_token=ExpressionWrapper(Q(refresh_token__isnull=False), output_field=BooleanField()),
            )
        )
        return queryset.order_by(*self.get_ordering(request))

    def get_ordering(self, request: HttpRequest) -> list[Any]:
        # Most urgent first; within a state, the soonest expiry first.
        return ["_urgency", F("expires_at").asc(nulls_last=True), "-consecutive_failures", "pk"]

    # -- Read-only pages, no adding -----------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Change permission unlocks the actions; no connection is ever edited in a form.
        return obj is None and super().has_change_permission(request)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return flatten_fieldsets(self.fieldsets)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        extra_context = {
            **(extra_context or {}),
            # Called by the template only when it renders (not on action POSTs).
            "health_summary": functools.partial(self.health_summary, request),
        }
        return super().changelist_view(request, extra_context)

    def health_summary(self, request: HttpRequest) -> list[dict[str, Any]]:
        counts = health_counts(self.get_queryset(request).order_by())
        current = request.GET.get(HealthFilter.parameter_name)
        return [
            {
                "slug": state.slug,
                "label": state.label,
                "help": state.help,
                "count": counts[state],
                "badge": badge(state),
                "current": current == state.slug,
            }
            for state in Health
        ]

    # -- Columns and fields ---------------------------------------------------

    @admin.display(description=_("Health"), ordering="_urgency")
    def health_badge(self, obj: ManychatConnection) -> SafeString:
        return badge(_health_of(obj))

    @admin.display(description=_("Page"), ordering="page_name")
    def page(self, obj: ManychatConnection) -> SafeString:
        # Name, id and how it is connected in one cell, to leave room for the other columns.
        return format_html(
            '{}<br><span class="quiet manychat-page-detail">{} · {}</span>',
            obj.page_name or _("unknown page"),
            obj.page_id or _("no page id"),
            obj.get_auth_type_display(),
        )

    @admin.display(description=_("Health"))
    def health_detail(self, obj: ManychatConnection) -> SafeString:
        state = _health_of(obj)
        return format_html("{} {}", badge(state), state.help)

    @admin.display(description=_("Expiry"), ordering="expires_at")
    def expiry(self, obj: ManychatConnection) -> SafeString:
        return self._expiry(obj, detailed=False)

    @admin.display(description=_("Expiry"))
    def expiry_detail(self, obj: ManychatConnection) -> SafeString:
        return self._expiry(obj, detailed=True)

    def _expiry(self, obj: ManychatConnection, *, detailed: bool) -> SafeString:
        if obj.status == Status.DISCONNECTED:
            return format_html('<span class="quiet">{}</span>', "—")
        if obj.expires_at is None:
            return format_html('<span class="quiet">{}</span>', _("no expiry"))
        if obj.is_expired:
            return format_html(
                "<strong>{}</strong>", timestamp(obj.expires_at, "", detailed=detailed, prefix="expired ")
            )
        return timestamp(obj.expires_at, "", detailed=detailed)

    @admin.display(description=_("Refreshed"), ordering="last_refreshed_at")
    def last_refreshed(self, obj: ManychatConnection) -> SafeString:
        return timestamp(obj.last_refreshed_at, _("never"))

    @admin.display(description=_("Last refreshed"))
    def last_refreshed_detail(self, obj: ManychatConnection) -> SafeString:
        return timestamp(obj.last_refreshed_at, _("never"), detailed=True)

    @admin.display(description=_("Last checked"))
    def last_checked(self, obj: ManychatConnection) -> SafeString:
        return timestamp(obj.last_checked_at, _("never"), detailed=True)

    @admin.display(description=_("Next attempt"))
    def next_attempt(self, obj: ManychatConnection) -> SafeString:
        return timestamp(obj.next_attempt_at, _("none scheduled"), detailed=True)

    @admin.display(description=_("Failures"), ordering="consecutive_failures")
    def failures(self, obj: ManychatConnection) -> int:
        return obj.consecutive_failures

    @admin.display(description=_("Refresh in progress"))
    def refresh_in_progress(self, obj: ManychatConnection) -> SafeString | StrOrPromise:
        until = obj.refresh_lease_until
        if until is None or until <= timezone.now():
            return _("no")
        return timestamp(until, "", detailed=True, prefix=str(_("yes, lease ends ")))

    @admin.display(description=_("Last error"), ordering="last_error")
    def short_last_error(self, obj: ManychatConnection) -> SafeString | str:
        error = obj.last_error
        if not error:
            return ""
        # The cell shows a few lines (clamped in CSS); the whole message is on hover.
        preview = error if len(error) <= ERROR_PREVIEW_LENGTH else f"{error[: ERROR_PREVIEW_LENGTH - 1]}…"
        return format_html('<span class="manychat-error" title="{}">{}</span>', error, preview)

    @admin.display(description=_("Access token"))
    def access_token_state(self, obj: ManychatConnection) -> StrOrPromise:
        return _("set (encrypted)") if _token_is_set(obj, "access_token") else _("not set")

    @admin.display(description=_("Refresh token"))
    def refresh_token_state(self, obj: ManychatConnection) -> StrOrPromise:
        return _("set (encrypted)") if _token_is_set(obj, "refresh_token") else _("not set")

    # -- Actions ---------------------------------------------------------------

    def _too_many(self, request: HttpRequest, count: int, what: str) -> bool:
        if count <= MAX_ROWS_PER_NETWORK_ACTION:
            return False
        self.message_user(
            request,
            f"{what}: {count} connections selected; at most {MAX_ROWS_PER_NETWORK_ACTION} at a time from the admin. "
            "Select fewer, or run `manage.py manychat_refresh_tokens` for bulk work.",
            messages.ERROR,
        )
        return True

    @admin.action(description=_("Refresh tokens now"), permissions=["change"])
    def refresh_tokens_now(self, request: HttpRequest, queryset: QuerySet[ManychatConnection]) -> None:
        refreshable = queryset.filter(status=Status.ACTIVE, auth_type=AuthType.OAUTH, refresh_token__isnull=False)
        pks = list(refreshable.values_list("pk", flat=True))
        not_refreshable = queryset.count() - len(pks)
        if self._too_many(request, len(pks), "Refresh tokens now"):
            return
        outcomes: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        for pk in pks:
            # Committed on its own even under ATOMIC_REQUESTS: a rotated refresh
            # token must not be lost if the request's transaction rolls back.
            result = refresh.refresh_connection_committed(pk, force=True)
            outcomes[str(result.outcome)] += 1
            if result.outcome is refresh.Outcome.CONFIG_ERROR:
                self.message_user(
                    request,
                    f"Refresh stopped: the provider refused the client credentials ({result.error_code}). "
                    "Check MANYCHAT_OAUTH_CLIENT_ID and MANYCHAT_OAUTH_CLIENT_SECRET.",
                    messages.ERROR,
                )
                break
            if result.outcome is refresh.Outcome.FAILED:
                failures[result.error_code or "error"] += 1
            if result.outcome is not refresh.Outcome.SKIPPED:
                detail = f" ({result.error_code})" if result.error_code else ""
                self._log(request, pk, f"Refresh tokens now: {result.outcome}{detail}.")
        parts = [f"{outcomes['refreshed']} refreshed"]
        if outcomes["reauth_required"]:
            parts.append(f"{outcomes['reauth_required']} now need re-authorization")
        if failures:
            parts.append(f"{sum(failures.values())} failed ({_codes(failures)}; retried later with backoff)")
        if outcomes["skipped"]:
            parts.append(f"{outcomes['skipped']} skipped (another worker was refreshing it, or it changed meanwhile)")
        if not_refreshable:
            parts.append(
                f"{_plural(not_refreshable, 'connection', 'connections')} not refreshable "
                "(API key, App install, inactive or without a refresh token)"
            )
        ok = not (failures or outcomes["reauth_required"] or outcomes["config_error"])
        self.message_user(
            request, "Refresh tokens now: " + "; ".join(parts) + ".", messages.SUCCESS if ok else messages.WARNING
        )

    @admin.action(description=_("Check connection (reads getInfo)"), permissions=["change"])
    def check_connections(self, request: HttpRequest, queryset: QuerySet[ManychatConnection]) -> None:
        active = list(queryset.filter(status=Status.ACTIVE))
        inactive = queryset.count() - len(active)
        if self._too_many(request, len(active), "Check connection"):
            return
        working = 0
        reauth = 0
        failures: Counter[str] = Counter()
        for connection in active:
            try:
                result = health.check_connection(connection)
            except ManychatOAuthError as exc:
                failures[exc.code] += 1
                continue
            if result.ok:
                working += 1
            elif result.status == Status.REAUTH_REQUIRED:
                reauth += 1
            else:
                failures[result.error_code or "error"] += 1
            self._log(request, connection, "Checked: " + ("works." if result.ok else f"failed ({result.error_code})."))
        parts = [f"{working} working"]
        if reauth:
            parts.append(f"{reauth} refused by Manychat, now need re-authorization")
        if failures:
            parts.append(f"{sum(failures.values())} could not be checked ({_codes(failures)})")
        if inactive:
            parts.append(f"{inactive} skipped (not active)")
        level = messages.SUCCESS if not (reauth or failures) else messages.WARNING
        self.message_user(request, "Check connection: " + "; ".join(parts) + ".", level)

    @admin.action(description=_("Mark as needing re-auth"), permissions=["change"])
    def mark_reauth_required(self, request: HttpRequest, queryset: QuerySet[ManychatConnection]) -> None:
        connections = list(queryset.filter(status=Status.ACTIVE))
        skipped = queryset.count() - len(connections)
        error = "Marked as needing re-authorization by an operator."
        ManychatConnection.objects.filter(pk__in=[c.pk for c in connections], status=Status.ACTIVE).update(
            status=Status.REAUTH_REQUIRED, last_error=error, next_attempt_at=None, updated_at=timezone.now()
        )
        for connection in connections:
            connection.status = Status.REAUTH_REQUIRED
            connection.last_error = error
            connection.next_attempt_at = None
            self._log(request, connection, "Marked as needing re-authorization.")
            reauth_required.send(sender=ManychatConnection, connection=connection)
        message = f"Marked {_plural(len(connections), 'connection', 'connections')} as needing re-authorization"
        if skipped:
            message += f"; {skipped} skipped (already needing re-auth or disconnected)"
        self.message_user(request, message + ".", messages.SUCCESS)

    @admin.action(description=_("Disconnect (forget tokens)"), permissions=["change"])
    def disconnect_connections(
        self, request: HttpRequest, queryset: QuerySet[ManychatConnection]
    ) -> TemplateResponse | None:
        connected = queryset.exclude(status=Status.DISCONNECTED)
        if request.POST.get("confirmed") != "yes":
            return self._confirm_disconnect(request, queryset, connected)
        count = 0
        for connection in connected:
            services.disconnect(connection)
            self._log(request, connection, "Disconnected: tokens forgotten.")
            count += 1
        self.message_user(
            request,
            f"Disconnected {_plural(count, 'connection', 'connections')}; their tokens were forgotten.",
            messages.SUCCESS,
        )
        return None

    def _confirm_disconnect(
        self,
        request: HttpRequest,
        queryset: QuerySet[ManychatConnection],
        connected: QuerySet[ManychatConnection],
    ) -> TemplateResponse:
        shown = 50
        context = {
            **self.admin_site.each_context(request),
            "title": _("Disconnect these connections?"),
            "opts": self.opts,
            "connections": connected[:shown],
            "count": connected.count(),
            "shown": shown,
            "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action": "disconnect_connections",
        }
        return TemplateResponse(
            request, "admin/manychat_oauth/manychatconnection/disconnect_confirmation.html", context
        )

    def _log(self, request: HttpRequest, connection: ManychatConnection | int, message: str) -> None:
        if isinstance(connection, int):
            connection = ManychatConnection.objects.defer("access_token", "refresh_token").get(pk=connection)
        self.log_change(request, connection, message)
