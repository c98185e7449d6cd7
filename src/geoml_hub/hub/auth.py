"""Authenticators of ``geoml-hub up``.

:class:`NativeAuthenticator` is jupyterhub-nativeauthenticator (hashed passwords in the hub
database, sign-up, admin approval at ``/hub/authorize``) with one change: its own login page
handler uses ``self.statsd``, which JupyterHub 6 removed, so every login failed with a 500.
We keep JupyterHub's standard login handler, which calls the same
:meth:`~nativeauthenticator.NativeAuthenticator.authenticate` (password check, approval,
lockout after repeated failures), and give it back what native's handler said: a user whose
password is right but whom no administrator has approved yet is told so
(:meth:`NativeAuthenticator.login_error_message`), not "Invalid username or password";
sign-up, approval and password change stay native's.
"""

from __future__ import annotations

from typing import Optional

from jupyterhub.handlers.login import LoginHandler as _HubLoginHandler
from nativeauthenticator import NativeAuthenticator as _Native


class LoginHandler(_HubLoginHandler):
    """JupyterHub's login page, with the authenticator's own message for a refused login."""

    async def _render(self, login_error=None, username=None):
        if login_error and self.request.method == "POST":
            message = getattr(self.authenticator, "login_error_message", None)
            better = message(self.get_body_argument("username", "", strip=True),
                             self.get_body_argument("password", "", strip=False)) if message else None
            login_error = better or login_error
        return await super()._render(login_error=login_error, username=username)


class NativeAuthenticator(_Native):
    """jupyterhub-nativeauthenticator without its JupyterHub-6-incompatible login handler."""

    def get_handlers(self, app):
        return [(route, LoginHandler if route == r"/login" else handler)
                for route, handler in super().get_handlers(app)]

    def login_error_message(self, username: str, password: str) -> Optional[str]:
        """Why a login was refused, where it is not a wrong password: the account awaits an
        administrator's approval (only said to whoever knows the password). ``None``: the
        standard message."""
        user = self.get_user(username) if username else None
        if user is None or user.is_authorized:
            return None
        if self.allowed_failed_logins and self.is_blocked(self.normalize_username(username)):
            return None
        if not user.is_valid_password(password):
            return None
        return (f"Your account {user.username} is waiting for an administrator's approval; "
                "you can log in once it is approved.")
