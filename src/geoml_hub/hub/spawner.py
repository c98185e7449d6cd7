"""Spawners that apply geoml-hub's profiles (:mod:`geoml_hub.hub.profiles`).

``GeomlLocalSpawner`` (``geoml-hub up``, one machine)
    jupyterhub's ``SimpleLocalProcessSpawner`` (every user runs as the hub's system user, with
    a home directory of their own from ``home_dir_template``) plus the profiles: the spawn
    form lists the profiles the user's groups allow, shows a ``requires_gpu`` profile
    disabled with the reason where PyTorch sees no GPU, and ``start()`` refuses a profile the
    user may not use (403) or that cannot run here (400) before anything is started, then
    applies the profile. A custom-image option (an option with ``allowed_registries``, whose
    free-form value sets the image) cannot run locally: the form shows its free-form choice
    disabled with the reason, and a submitted one is refused with 400 ("custom images need
    the Kubernetes spawner").

    What a profile does locally:

    - environment: the profile's (and chosen options') ``kubespawner_override.environment``,
      ``GEOML_DEVICE`` (``cpu``/``cuda``), ``CUDA_VISIBLE_DEVICES`` (``''`` for CPU profiles,
      so PyTorch sees no GPU), ``GEOML_PROFILE`` and ``OMP_NUM_THREADS`` (``floor(cpu_limit)``);
    - ``mem_limit``/``cpu_limit``/``mem_guarantee``/``cpu_guarantee`` become the spawner's
      traits, which JupyterHub passes on as ``MEM_LIMIT``/``CPU_LIMIT``/... (what
      jupyter-resource-usage displays, as under KubeSpawner);
    - ``default_url``.

    Not enforced locally: memory and CPU limits (no cgroups; a ``RLIMIT_AS`` cap is not used
    because PyTorch and CUDA reserve far more virtual address space than they use, so any cap
    near the real limit breaks them — only ``OMP_NUM_THREADS`` bounds PyTorch's CPU threads),
    GPU isolation (all GPU users share the GPUs listed in ``CUDA_VISIBLE_DEVICES``; a CPU
    profile only hides them), the image, node selection and tolerations (Kubernetes only),
    and, unless ``system_users`` is on, isolation between users (one system user).

    With ``system_users`` (what ``geoml-hub up`` sets when it runs as root), each hub user
    gets their own system account ``jupyter-<name>`` on first spawn (created with
    ``useradd``, home ``system_homes_dir/jupyter-<name>`` mode 0700, see
    :mod:`geoml_hub.hub.accounts`), and their server and kernels run as that account
    (JupyterHub's ``LocalProcessSpawner`` set-uid start). Without it every server runs as the
    hub's own account; as root, ``--allow-root`` is then added to the server's arguments.

``GeomlKubeSpawner`` (Kubernetes)
    KubeSpawner whose ``profile_list`` is the same file, filtered per user by group (a
    :class:`~geoml_hub.hub.profiles.ProfileListForUser`), with a 403 for a submitted profile
    outside the user's groups or a custom image outside the option's ``allowed_registries``
    (400 for a malformed image reference). kubespawner is imported only when this name is used
    (``c.JupyterHub.spawner_class = "geoml_hub.hub.spawner.GeomlKubeSpawner"``).
"""

from __future__ import annotations

import asyncio
import os
import pwd
from typing import Any, Dict, List, Optional

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jupyterhub.spawner import SimpleLocalProcessSpawner, set_user_setuid
from traitlets import Bool, Dict as DictTrait, Integer, List as ListTrait, Unicode, default, validate

from .accounts import ACCOUNT_PREFIX, ensure_account, system_username
from .profiles import (
    PROFILES_FILE,
    GpuInfo,
    ProfileListForUser,
    LOCAL_CUSTOM_IMAGE_REASON,
    Machine,
    ProfileRequestError,
    Selection,
    choices_beyond_machine,
    default_choices,
    detect_gpu,
    http_error,
    is_custom_image_option,
    kubespawner_check_user_options,
    load_profiles,
    local_settings,
    options_from_formdata,
    profiles_for_user,
    select_profile,
    unavailable_reason,
    user_groups,
    validate_profiles,
)

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
FORM_TEMPLATE = "profiles_form.html"

#: the spawner traits a profile sets locally (restored to the configured values before each start)
_LOCAL_TRAITS = ("environment", "mem_limit", "mem_guarantee", "cpu_limit", "cpu_guarantee", "default_url")


def _render(template: str, **context: Any) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                      keep_trailing_newline=True)
    return env.get_template(template).render(**context)


class GeomlLocalSpawner(SimpleLocalProcessSpawner):
    """``SimpleLocalProcessSpawner`` with geoml-hub's profiles (see the module docstring)."""

    profiles_file = Unicode(
        "",
        config=True,
        help=f"""The profiles YAML file (empty: the packaged {PROFILES_FILE.name}).
        Ignored when profile_list is set in configuration.""",
    )

    profile_list = ListTrait(
        DictTrait(),
        config=True,
        help="""The profiles (validated as geoml_hub.hub.profiles.validate_profiles does).
        Default: loaded from profiles_file.""",
    )

    admin_sees_all_profiles = Bool(
        True,
        config=True,
        help="JupyterHub admins see and may start profiles restricted by allowed_groups.",
    )

    gpu_available = Bool(
        None,
        allow_none=True,
        config=True,
        help="""Whether a GPU profile can run here. None: ask PyTorch (torch.cuda.is_available(),
        in a subprocess, once per hub process). False hides the GPU from every profile's offer.""",
    )

    gpu_count = Integer(
        1,
        config=True,
        help="GPUs assumed when gpu_available is forced to True.",
    )

    system_users = Bool(
        False,
        config=True,
        help="""Run each user's server and kernels as their own system account (prefix + name),
        created on first spawn with a 0700 home in system_homes_dir. Needs root.""",
    )

    machine_cpus = Integer(
        None,
        allow_none=True,
        config=True,
        help="""CPU cores the spawn form assumes (None: os.cpu_count()). A choice whose cpu_limit
        exceeds them is shown disabled with the reason.""",
    )

    machine_memory = Integer(
        None,
        allow_none=True,
        config=True,
        help="""Memory in bytes the spawn form assumes (None: psutil's total). A choice whose
        mem_limit exceeds it is shown disabled with the reason.""",
    )

    def machine(self) -> Machine:
        """This machine's cores and memory, as the spawn form compares choices with them."""
        here = Machine.here()
        return Machine(cpus=self.machine_cpus or here.cpus, memory=self.machine_memory or here.memory)

    system_user_prefix = Unicode(ACCOUNT_PREFIX, config=True, help="Prefix of the users' system accounts.")

    system_homes_dir = Unicode("/home", config=True, help="Where new system accounts get their home.")

    @property
    def system_user(self) -> str:
        """The system account the server runs as (only with ``system_users``)."""
        return system_username(self.user.name, self.system_user_prefix)

    @default("home_dir")
    def _default_home_dir(self):
        if self.system_users:
            try:
                return pwd.getpwnam(self.system_user).pw_dir
            except KeyError:
                return os.path.join(self.system_homes_dir, self.system_user)
        return self.home_dir_template.format(username=self.user.name)

    async def run_pre_spawn_hook(self):
        if self.system_users:
            entry = await asyncio.to_thread(ensure_account, self.system_user, self.system_homes_dir)
            if self.home_dir != entry.pw_dir:
                self.home_dir = entry.pw_dir
            self.log.info("Server of %s runs as system account %s (uid %d, home %s)", self._log_name,
                          self.system_user, entry.pw_uid, entry.pw_dir)
        return super().run_pre_spawn_hook()

    def make_preexec_fn(self, name):
        if self.system_users:
            return set_user_setuid(self.system_user)
        return super().make_preexec_fn(name)

    def user_env(self, env):
        if self.system_users:
            env["USER"] = env["LOGNAME"] = self.system_user
            env["HOME"] = self.home_dir
            env["SHELL"] = "/bin/bash"
            return env
        return super().user_env(env)

    @default("profile_list")
    def _default_profile_list(self):
        return load_profiles(self.profiles_file or None)

    @validate("profile_list")
    def _validate_profile_list(self, proposal):
        return validate_profiles(proposal.value, source=f"{type(self).__name__}.profile_list")

    @default("options_form")
    def _default_options_form(self):
        return lambda spawner: spawner.render_options_form()

    @default("options_from_form")
    def _default_options_from_form(self):
        return options_from_formdata

    @default("apply_user_options")
    def _default_apply_user_options(self):
        # the profile is checked and applied in start() (as KubeSpawner does); this no-op only
        # keeps JupyterHub from warning about "unhandled user_options"
        return lambda spawner, user_options: None

    selected_profile: Optional[Selection] = None
    """The profile (and options) of the last start, once ``load_user_options`` has run."""

    # ---------------------------------------------------------------- GPU and user

    async def gpu_info(self) -> GpuInfo:
        if self.gpu_available is not None:
            if self.gpu_available:
                return GpuInfo(True, max(1, self.gpu_count), reason="")
            return GpuInfo(False, reason="no GPU: the hub is configured without GPUs (gpu_available = False)")
        return await asyncio.to_thread(detect_gpu)

    def _user_groups(self):
        return user_groups(self.user)

    # ---------------------------------------------------------------- the form

    async def render_options_form(self) -> str:
        """The spawn form: the user's profiles as radio buttons (KubeSpawner's field names)."""
        groups, is_admin = self._user_groups()
        gpu = await self.gpu_info()
        visible = profiles_for_user(self.profile_list, groups, is_admin, self.admin_sees_all_profiles)
        current = None
        for options in (self.user_options or {}, {}):
            try:
                current = select_profile(self.profile_list, options, groups, is_admin,
                                         admin_sees_all=self.admin_sees_all_profiles, gpu=gpu, custom_images=False)
                break
            except ProfileRequestError:
                continue
        entries: List[Dict[str, Any]] = []
        machine = self.machine()
        for p in visible:
            reason = unavailable_reason(p, gpu)
            if current is not None and current.slug == p["slug"]:
                chosen = current.options
            else:
                chosen = default_choices(p)
            options = p.get("profile_options") or {}
            # one machine: resource choices beyond its cores or memory are shown disabled, with why
            too_big = choices_beyond_machine(p, machine)
            defaults = default_choices(p)
            chosen = {k: (defaults.get(k, v) if v in too_big.get(k, {}) else v) for k, v in chosen.items()}
            selected = {k: v for k, v in chosen.items() if v in ((options.get(k) or {}).get("choices") or {})}
            unlisted = {k: v for k, v in chosen.items() if k not in selected}
            # no containers here: a custom image is shown, disabled, with the reason
            unlisted_unavailable = {k: LOCAL_CUSTOM_IMAGE_REASON for k, o in options.items()
                                    if is_custom_image_option(o)}
            entries.append({
                "slug": p["slug"], "display_name": p["display_name"], "description": p.get("description") or "",
                "profile_options": options, "unavailable": reason,
                "checked": current is not None and current.slug == p["slug"] and reason is None,
                "selected": selected, "unlisted": unlisted, "unlisted_unavailable": unlisted_unavailable,
                "choices_unavailable": too_big, "machine": machine,
            })
        return _render(FORM_TEMPLATE, profiles=entries, username=self.user.name)

    # ---------------------------------------------------------------- submit-time check and apply

    async def load_user_options(self) -> Selection:
        """Check ``user_options`` against the profiles and apply the chosen one.

        Called by ``start()`` (as KubeSpawner does), so options submitted by the form and by
        the REST API are checked alike. Raises ``tornado.web.HTTPError`` 403 (profile outside
        the user's groups) or 400 (unknown profile or choice, no GPU here, a custom image).
        """
        groups, is_admin = self._user_groups()
        gpu = await self.gpu_info()
        try:
            selection = select_profile(self.profile_list, self.user_options or {}, groups, is_admin,
                                       admin_sees_all=self.admin_sees_all_profiles, gpu=gpu, username=self.user.name,
                                       custom_images=False)
        except ProfileRequestError as exc:
            self.log.warning("Refusing to start %s: %s", self._log_name, exc)
            raise http_error(exc) from None
        settings = local_settings(selection, gpu)
        self._restore_configured()
        env = dict(self.environment)
        env.update(settings["environment"])
        self.environment = env
        for key in _LOCAL_TRAITS[1:]:
            if key in settings:
                setattr(self, key, settings[key])
        self.selected_profile = selection
        chosen = ", ".join(f"{k}={v}" for k, v in selection.options.items())
        self.log.info(
            "Starting %s with profile %s%s: GEOML_DEVICE=%s CUDA_VISIBLE_DEVICES=%r mem_limit=%s cpu_limit=%s%s",
            self._log_name, selection.slug, f" ({chosen})" if chosen else "", env["GEOML_DEVICE"],
            env["CUDA_VISIBLE_DEVICES"], self.mem_limit, self.cpu_limit,
            f"; Kubernetes-only, not applied: {', '.join(settings['ignored'])}" if settings["ignored"] else "")
        return selection

    def _restore_configured(self) -> None:
        # the spawner object outlives a stop: undo the previous profile before applying the next
        base = getattr(self, "_geoml_configured", None)
        if base is None:
            self._geoml_configured = {k: (dict(v) if isinstance(v, dict) else v)
                                      for k, v in ((k, getattr(self, k)) for k in _LOCAL_TRAITS)}
            return
        for key, value in base.items():
            setattr(self, key, dict(value) if isinstance(value, dict) else value)

    def get_args(self) -> List[str]:
        args = list(super().get_args())
        if self.system_users:
            args = [a for a in args if a != "--allow-root"]
        elif hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in args:
            args.append("--allow-root")
        return args

    async def start(self):
        await self.load_user_options()
        return await super().start()


# ------------------------------------------------------------------------------------------------
# Kubernetes: built on first use so that local mode does not need kubespawner


def _make_kube_spawner():
    from kubespawner import KubeSpawner

    class GeomlKubeSpawner(KubeSpawner):
        """KubeSpawner with geoml-hub's profiles file, filtered by the user's groups.

        ``profile_list`` defaults to ``profiles_file`` (the packaged ``profiles.yaml``); a list
        set in configuration (e.g. z2jh's ``singleuser.profileList`` holding the same YAML) is
        validated and wrapped the same way, so ``allowed_groups`` holds either way. Submitted
        options are checked in ``load_user_options`` (403 outside the groups, 400 otherwise)
        before KubeSpawner applies them.
        """

        profiles_file = Unicode("", config=True, help="The profiles YAML file (empty: the packaged one).")
        admin_sees_all_profiles = Bool(True, config=True,
                                       help="JupyterHub admins see and may start group-restricted profiles.")

        @default("profile_list")
        def _default_profile_list(self):
            return ProfileListForUser(load_profiles(self.profiles_file or None))

        @validate("profile_list")
        def _validate_profile_list(self, proposal):
            value = proposal.value
            if isinstance(value, ProfileListForUser) or callable(value) or not value:
                return value
            return ProfileListForUser(validate_profiles(value, source="KubeSpawner.profile_list", allow_mapping=True))

        async def load_user_options(self):
            if isinstance(self.profile_list, ProfileListForUser):
                selection = kubespawner_check_user_options(self)
                self.log.info("Starting %s with profile %s", self._log_name, selection.slug)
            await super().load_user_options()

    GeomlKubeSpawner.__module__ = __name__
    return GeomlKubeSpawner


def __getattr__(name: str):
    if name == "GeomlKubeSpawner":
        cls = _make_kube_spawner()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
