"""Authenticators of ``geoml-hub up``.

:class:`NativeAuthenticator` is jupyterhub-nativeauthenticator (hashed passwords in the hub
database, sign-up, admin approval at ``/hub/authorize``) with one change: its own login page
handler uses ``self.statsd``, which JupyterHub 6 removed, so every login failed with a 500.
We keep JupyterHub's standard login handler, which calls the same
:meth:`~nativeauthenticator.NativeAuthenticator.authenticate` (password check, approval,
lockout after repeated failures); sign-up, approval and password change stay native's.
"""

from __future__ import annotations

from nativeauthenticator import NativeAuthenticator as _Native


class NativeAuthenticator(_Native):
    """jupyterhub-nativeauthenticator without its JupyterHub-6-incompatible login handler."""

    def get_handlers(self, app):
        return [(route, handler) for route, handler in super().get_handlers(app) if route != r"/login"]
