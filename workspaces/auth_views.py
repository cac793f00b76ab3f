"""Sign-in and password reset, throttled (workspaces.throttling): Django's views with a check
before any password is hashed or any mail is sent."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.http import HttpResponse

from . import throttling


class ThrottledLoginView(auth_views.LoginView):
    """After too many wrong passwords for an account or from an address, sign-in is refused for
    a while (429, `Retry-After`), even with the right password, and no password is checked."""

    def post(self, request, *args, **kwargs):
        wait = throttling.login_wait(request.POST.get("username", ""), throttling.client_address(request))
        if wait:
            return self._locked(wait)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        wait = throttling.login_failed(self.request.POST.get("username", ""), throttling.client_address(self.request))
        if wait:
            return self._locked(wait)
        return super().form_invalid(form)

    def form_valid(self, form):
        throttling.login_succeeded(form.cleaned_data.get("username", ""))
        return super().form_valid(form)

    def _locked(self, wait: int) -> HttpResponse:
        minutes = max(1, -(-wait // 60))
        context = self.get_context_data(form=self.get_form_class()(self.request), locked_minutes=minutes)
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(wait)
        return response


class ThrottledPasswordResetView(auth_views.PasswordResetView):
    """At most a few reset mails an hour to one address (more are quietly not sent, so the form
    tells nobody whether an account exists), and a bound on forms from one client (429)."""

    def form_valid(self, form):
        client_ok, mail_ok = throttling.password_reset_allowed(
            form.cleaned_data.get("email", ""), throttling.client_address(self.request)
        )
        if not client_ok:
            response = self.render_to_response(self.get_context_data(form=form, throttled=True), status=429)
            response["Retry-After"] = "3600"
            return response
        if not mail_ok:
            return super(auth_views.PasswordResetView, self).form_valid(form)  # the "sent" page, no mail
        return super().form_valid(form)
