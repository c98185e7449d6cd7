"""Notebook profiles: one YAML file for the local hub (``geoml-hub up``) and for KubeSpawner.

The file
--------
``profiles.yaml`` (beside this module; the Helm chart renders the same file, linked as
``helm/geoml-hub/files/profiles.yaml``, unless ``singleuser.profileList`` replaces it; any
other file through ``load_profiles(path)`` or the spawners' ``profiles_file``) is a YAML
**list** of profiles in the shape of zero-to-jupyterhub's ``singleuser.profileList`` /
KubeSpawner's ``profile_list``. Its schema is ``profiles.schema.yaml`` (JSON schema, every key
described there), which :func:`validate_profiles` checks with jsonschema before what a schema
cannot say (unique slugs, exactly one default, GPU counts, registry prefixes):

``display_name``, ``slug`` (required), ``description``, ``default`` (exactly one profile),
``kubespawner_override`` (KubeSpawner trait → value, applied by KubeSpawner as it is; the keys
the local spawner uses too are typed in the schema), ``profile_options`` (option slug →
``{display_name, choices, unlisted_choice}`` exactly as KubeSpawner reads it; ``{value}`` in an
unlisted choice's override is replaced by what was typed).

geoml-hub's extension keys (stripped by :func:`kubespawner_profile_list`; upstream
KubeSpawner has no equivalent):

``allowed_groups`` (list of JupyterHub group names)
    Only members of one of these groups see the profile on the form and may start it
    (checked again when options are submitted, also through the REST API). Left out: every
    user. JupyterHub **admins see and may start every profile** (they can add themselves to
    any group anyway, and need to test restricted profiles); switch this off with the
    spawners' ``admin_sees_all_profiles = False``.
``requires_gpu`` (bool)
    The profile needs a CUDA GPU. The local spawner offers it only where PyTorch sees one
    (otherwise the form shows it disabled with the reason, and a submitted request is
    refused); a profile with ``placement: gpu`` or whose ``extra_resource_limits`` ask for
    ``nvidia.com/gpu`` must set it.
``placement`` (``gpu`` or ``cpu``)
    Node placement on Kubernetes from :mod:`geoml_hub.placement` (``placement.yaml``, the
    one declaration the chart's WPS jobs use too), merged into ``kubespawner_override`` when
    the list is validated (:func:`apply_placement`): ``gpu`` adds a limit of one GPU, the GPU
    node selector and the GPU taint's toleration; ``cpu`` the node affinity that keeps the
    server off GPU nodes.
``profile_options.<option>.allowed_registries`` (list of image prefixes, each ending in ``/``)
    Makes the option a **custom-image option**: its ``unlisted_choice`` must be enabled and
    set ``kubespawner_override.image`` from ``{value}``. A submitted free-form value must give
    a well-formed image reference (Docker's reference grammar, checked after the option's
    ``validation_regex``; otherwise 400) whose image lies under one of the prefixes
    (otherwise :class:`ProfileNotAllowed`, 403, naming the prefixes). Prefixes and images are
    compared in Docker's normalised form, so ``geoml-hub/``, ``docker.io/geoml-hub/`` and
    ``index.docker.io/geoml-hub/`` are the same namespace on Docker Hub;
    ``registry.example.org/`` allows the whole registry, ``registry.example.org/team/`` one
    namespace of it. The preset ``choices`` are the administrator's and are not checked.
    The local spawner cannot run images (no containers): it shows the free-form choice of a
    custom-image option disabled with the reason, and refuses a submitted one with 400
    ("custom images need the Kubernetes spawner"); see ``select_profile(custom_images=...)``.

Errors in the file are :class:`ProfileError`, one line naming the file, the profile and the
key path. A refused choice is a :class:`ProfileRequestError` (``status`` 400) or
:class:`ProfileNotAllowed` (``status`` 403); the spawners turn them into
``tornado.web.HTTPError``.

Nothing here imports jupyterhub, kubespawner or torch: the GPU check runs PyTorch in a
subprocess, once per process (:func:`detect_gpu`).
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import jsonschema
import psutil
import yaml

from .. import placement

PathLike = Union[str, "os.PathLike[str]"]

PROFILES_FILE = Path(__file__).resolve().with_name("profiles.yaml")
#: the JSON schema of a profiles file (YAML), also embedded in the Helm chart's values.schema.json
PROFILES_SCHEMA_FILE = Path(__file__).resolve().with_name("profiles.schema.yaml")

#: keys of a profile as z2jh's singleuser.profileList / KubeSpawner's profile_list has them
KUBESPAWNER_KEYS = ("display_name", "slug", "description", "default", "kubespawner_override", "profile_options")
#: geoml-hub's own keys, removed before KubeSpawner sees the list
EXTENSION_KEYS = ("allowed_groups", "requires_gpu", "placement")
#: geoml-hub's keys of a profile option, removed before KubeSpawner sees the list
OPTION_EXTENSION_KEYS = ("allowed_registries",)

GPU_RESOURCE = placement.GPU_RESOURCE

# Docker's image reference grammar (github.com/distribution/reference, regexp.go), without
# IPv6 registry addresses: [domain[:port]/]path[:tag][@digest], name at most 255 characters
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
IMAGE_REF_RE = re.compile(rf"^(?P<name>{_NAME})(?::(?P<tag>[\w][\w.-]{{0,127}}))?"
                          r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$")
#: an allowed_registries entry: a registry (``host[:port]/``) or a namespace in one, ending in '/'
REGISTRY_PREFIX_RE = re.compile(rf"^{_NAME}/$")
DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")

#: kubespawner_override keys the local spawner applies (the others are Kubernetes-only)
LOCAL_OVERRIDE_KEYS = ("environment", "mem_limit", "mem_guarantee", "cpu_limit", "cpu_guarantee", "default_url")


# --------------------------------------------------------------------------------------------
# errors


class ProfileError(ValueError):
    """The profiles file (or a profile list given in configuration) is invalid."""


class ProfileRequestError(ValueError):
    """The profile or option a user asked for cannot be started (HTTP ``status``)."""

    status = 400


class ProfileNotAllowed(ProfileRequestError, PermissionError):
    """The user is in none of the profile's ``allowed_groups``, or asked for a custom image
    outside the option's ``allowed_registries``."""

    status = 403


class ProfileUnavailable(ProfileRequestError):
    """The profile or option cannot run here (no GPU that PyTorch can see; a custom image
    under the local spawner)."""

    status = 400


# --------------------------------------------------------------------------------------------
# loading and validation


def load_profiles(path: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """Read and validate a profiles file (default: the packaged ``profiles.yaml``).

    Returns the profiles, normalised as :func:`validate_profiles` returns them.

    Raises
    ------
    ProfileError
        One line: ``<file>: profile 'slug': key: what is wrong``.
    """
    path = Path(path) if path is not None else PROFILES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read the profiles file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProfileError(f"{path}: not valid YAML{where}: {problem}") from None
    return validate_profiles(data, source=str(path))


@functools.lru_cache(maxsize=1)
def profiles_schema() -> Dict[str, Any]:
    """The JSON schema of a profile list (``profiles.schema.yaml``, with geoml-hub's ``x-error``
    messages; :func:`geoml_hub.tools.chartschema.strip_extensions` removes them)."""
    return yaml.safe_load(PROFILES_SCHEMA_FILE.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft7Validator:
    schema = profiles_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def validate_profiles(data: Any, source: str = "profile list", *, allow_mapping: bool = False
                      ) -> List[Dict[str, Any]]:
    """Validate a profile list (parsed YAML, or a Python list from configuration).

    Checks ``data`` against ``profiles.schema.yaml`` (jsonschema), then what the schema cannot
    say (:func:`_check_profile`, unique slugs, one default). With ``allow_mapping``, ``data``
    may also be a mapping slug → profile (KubeSpawner's dict form of ``profile_list``).

    Returns a normalised deep copy (the input is not modified): ``description`` ``''``,
    ``default`` ``False``, ``allowed_groups`` ``None`` (everyone), ``requires_gpu`` ``False``,
    ``kubespawner_override``/``profile_options`` ``{}`` where left out, and a ``placement``'s
    node placement (:mod:`geoml_hub.placement`) merged into ``kubespawner_override``. A
    normalised list validates again to itself.
    """
    if allow_mapping and isinstance(data, Mapping):
        items = []
        for slug, profile in data.items():
            if isinstance(profile, Mapping):
                profile = {"slug": slug, **profile}
            items.append(profile)
        data = items
    if data is None:
        raise ProfileError(f"{source}: the file is empty: expected a list of profiles")
    if isinstance(data, (list, tuple)):
        data = [dict(p) if isinstance(p, Mapping) else p for p in data]
    error = _first_error(_validator().iter_errors(data))
    if error is not None:
        raise ProfileError(_error_text(error, data, source))
    profiles = []
    seen: Dict[str, int] = {}
    for i, raw in enumerate(data):
        slug = raw["slug"]
        _check_profile(raw, lambda key, message, s=slug: _fail(source, f"profile {s!r}", key, message))
        if slug in seen:
            raise ProfileError(f"{source}: profile {slug!r} (item {i + 1}): slug: duplicate of item {seen[slug] + 1}")
        seen[slug] = i
        profiles.append(_normalise(raw))
    defaults = [p["slug"] for p in profiles if p["default"]]
    if len(defaults) != 1:
        which = "none has" if not defaults else f"{len(defaults)} have ({', '.join(defaults)})"
        raise ProfileError(f"{source}: default: exactly one profile must have 'default: true'; {which}")
    return profiles


def _fail(source: str, where: str, key: str, message: str):
    raise ProfileError(f"{source}: {where}: {key}: {message}")


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


# -- schema errors as one line -----------------------------------------------------------------

#: the message of a failed ``type`` without ``x-error``, by the schema's (first) type
_TYPE_MESSAGES = {"boolean": "must be true or false, got {value!r}", "string": "must be a string, got {kind}",
                  "object": "must be a mapping, got {kind}", "array": "must be a list, got {kind}",
                  "number": "must be a number, got {value!r}", "integer": "must be a whole number, got {value!r}"}


def _first_error(errors: Iterable[jsonschema.ValidationError]) -> Optional[jsonschema.ValidationError]:
    """The error to report: one of the whole list first, else one of the first bad profile
    (the most relevant of it, as jsonschema's ``best_match`` chooses)."""
    errors = list(errors)
    if not errors:
        return None
    first = min(e.path[0] if e.path else -1 for e in errors)
    return jsonschema.exceptions.best_match(e for e in errors if (e.path[0] if e.path else -1) == first)


def _error_text(error: jsonschema.ValidationError, data: Any, source: str) -> str:
    """``<source>: profile 'slug': key.path: message`` for a schema error."""
    path = list(error.path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    value = error.instance
    message = None
    if error.validator == "additionalProperties" and schema.get("additionalProperties") is False:
        known = list(schema.get("properties", {}))
        extra = next(k for k in value if k not in known)
        path.append(extra)
        message = f"unknown key{_close_match(extra, known)} (known keys: {', '.join(known)})"
    elif error.validator == "required":
        path.append(next(k for k in error.validator_value if k not in value))
        message = "missing (required)"
    elif "propertyNames" in error.schema_path:
        path.append(value)   # the bad key is the instance; report it under its own name
    if schema.get("x-path") == "parent" and path and isinstance(path[-1], int):
        path.pop()
    if message is None:
        custom = schema.get("x-error")
        if isinstance(custom, Mapping):
            custom = custom.get(error.validator)
        if custom is None and error.validator == "type":
            types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
            custom = _TYPE_MESSAGES.get(types[0])
        message = custom.format(value=value, kind=_kind(value)) if custom else error.message
    if not path:
        return f"{source}: {message}"
    index, rest = path[0], path[1:]
    item = data[index] if isinstance(data, list) else None
    slug = item.get("slug") if isinstance(item, Mapping) else None
    where = f"profile {slug!r}" if isinstance(slug, str) and slug else f"profile {index + 1}"
    if not rest:
        return f"{source}: {where}: {message}"
    parts, node = [], item
    for k in rest:   # list items as [i], mapping keys (whatever their type) as .key
        parts.append(f"[{k}]" if isinstance(node, list) else (f".{k}" if parts else str(k)))
        node = node[k] if isinstance(node, (list, Mapping)) and _has(node, k) else None
    return f"{source}: {where}: {''.join(parts)}: {message}"


def _has(node: Any, key: Any) -> bool:
    return 0 <= key < len(node) if isinstance(node, list) else key in node


def _close_match(key: Any, known: Sequence[str]) -> str:
    match = difflib.get_close_matches(str(key), known, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


# -- what the schema cannot say ----------------------------------------------------------------


def _check_profile(raw: Mapping, fail: Callable[[str, str], None]) -> None:
    """Cross-field checks of a profile that passed the schema."""
    override = raw.get("kubespawner_override") or {}
    _check_gpu_count(override, lambda k, m: fail(f"kubespawner_override.{k}", m))
    if not raw.get("requires_gpu"):
        if GPU_RESOURCE in (override.get("extra_resource_limits") or {}):
            fail("requires_gpu", f"kubespawner_override.extra_resource_limits asks for {GPU_RESOURCE}: set "
                                 "'requires_gpu: true' so the local spawner knows the profile needs a GPU")
        if raw.get("placement") == "gpu":
            fail("requires_gpu", f"placement 'gpu' gives the profile a GPU ({GPU_RESOURCE}): set "
                                 "'requires_gpu: true' so the local spawner knows the profile needs a GPU")
    for name, option in (raw.get("profile_options") or {}).items():
        _check_option(option, lambda k, m, n=name: fail(f"profile_options.{n}.{k}", m))


def _check_gpu_count(override: Mapping, fail: Callable[[str, str], None]) -> None:
    gpus = (override.get("extra_resource_limits") or {}).get(GPU_RESOURCE)
    if gpus is not None and (not gpus.isdigit() or int(gpus) < 1):
        fail(f"extra_resource_limits.{GPU_RESOURCE}", f"{gpus!r} must be a whole number of GPUs, at least '1'")


def _check_option(option: Mapping, fail: Callable[[str, str], None]) -> None:
    choices = option.get("choices") or {}
    unlisted = option.get("unlisted_choice") or {}
    for cname, choice in choices.items():
        _check_gpu_count(choice.get("kubespawner_override") or {},
                         lambda k, m, c=cname: fail(f"choices.{c}.kubespawner_override.{k}", m))
    defaults = [cname for cname, choice in choices.items() if choice.get("default")]
    if len(defaults) > 1:
        fail("choices", f"more than one default choice ({', '.join(defaults)})")
    regex = unlisted.get("validation_regex")
    if regex is not None:
        try:
            re.compile(regex)
        except re.error as exc:
            fail("unlisted_choice.validation_regex", f"not a valid regular expression: {exc}")
    if not choices and not unlisted.get("enabled"):
        fail("choices", "an option needs choices or an enabled unlisted_choice")
    registries = option.get("allowed_registries")
    if registries is None:
        return
    for prefix in registries:
        if not REGISTRY_PREFIX_RE.match(prefix):
            fail("allowed_registries", f"{prefix!r} is not a registry or namespace prefix: expected "
                                       "host[:port]/ or [host[:port]/]namespace/, no scheme, no tag")
    if len({normalize_registry_prefix(p) for p in registries}) != len(registries):
        fail("allowed_registries", "lists a registry twice (docker.io/x/ and x/ are the same)")
    image = (unlisted.get("kubespawner_override") or {}).get("image")
    if not unlisted.get("enabled") or not isinstance(image, str) or "{value}" not in image:
        fail("allowed_registries", "applies to a custom image typed by the user: the option needs an enabled "
                                   "unlisted_choice with kubespawner_override.image set from '{value}'")


def _normalise(raw: Mapping) -> Dict[str, Any]:
    profile = copy.deepcopy(dict(raw))
    profile["description"] = raw.get("description") or ""
    profile["default"] = bool(raw.get("default", False))
    profile["allowed_groups"] = list(raw["allowed_groups"]) if raw.get("allowed_groups") else None
    profile["requires_gpu"] = bool(raw.get("requires_gpu", False))
    profile["kubespawner_override"] = apply_placement(raw.get("placement"), raw.get("kubespawner_override") or {})
    profile["profile_options"] = copy.deepcopy(dict(raw.get("profile_options") or {}))
    return profile


def apply_placement(kind: Optional[str], override: Mapping[str, Any]) -> Dict[str, Any]:
    """``override`` (a copy) with the node placement ``kind`` of :mod:`geoml_hub.placement`.

    ``gpu``: ``extra_resource_limits`` gets one GPU unless it sets the count itself, the GPU
    node selector is merged under the override's own labels, the GPU tolerations come first in
    ``tolerations``. ``cpu``: the off-GPU-node terms come first in ``node_affinity_required``.
    What the override already has is not added twice, so applying it again changes nothing.
    ``None``: an unchanged copy.
    """
    out = copy.deepcopy(dict(override))

    def prepend(key: str, items: List[Any]) -> None:
        own = list(out.get(key) or [])
        out[key] = items + [x for x in own if x not in items]

    if kind == "gpu":
        out["extra_resource_limits"] = {GPU_RESOURCE: "1", **(out.get("extra_resource_limits") or {})}
        out["node_selector"] = {**placement.gpu_node_selector(), **(out.get("node_selector") or {})}
        prepend("tolerations", placement.gpu_tolerations())
    elif kind == "cpu":
        prepend("node_affinity_required", placement.cpu_node_affinity_terms())
    return out


# --------------------------------------------------------------------------------------------
# custom images


def _split_domain(name: str) -> Tuple[str, str]:
    """Docker's rule: the first component is a registry if it has '.' or ':' or is localhost
    (or has upper case letters); otherwise the image is on Docker Hub."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        domain = first.lower()
        return (DOCKER_HUB if domain in _DOCKER_HUB_ALIASES else domain), rest
    return DOCKER_HUB, name


def normalize_image(image: str) -> str:
    """A well-formed image reference in Docker's full form (``ubuntu:22.04`` →
    ``docker.io/library/ubuntu:22.04``, ``geoml-hub/x`` → ``docker.io/geoml-hub/x``).

    Raises ``ValueError`` for a malformed reference.
    """
    m = IMAGE_REF_RE.match(image) if isinstance(image, str) else None
    if m is None or len(m.group("name")) > 255:
        raise ValueError(f"{image!r} is not an image reference")
    domain, path = _split_domain(m.group("name"))
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return f"{domain}/{path}" + image[len(m.group("name")):]


def normalize_registry_prefix(prefix: str) -> str:
    """An ``allowed_registries`` entry in the form :func:`normalize_image` gives
    (``geoml-hub/`` → ``docker.io/geoml-hub/``; ``registry.example.org/`` stays)."""
    name = prefix[:-1]
    first = name.split("/", 1)[0]
    if "/" not in name and ("." in first or ":" in first or first == "localhost"):
        domain = first.lower()
        return f"{DOCKER_HUB if domain in _DOCKER_HUB_ALIASES else domain}/"
    domain, path = _split_domain(name)
    return f"{domain}/{path}/"


def image_allowed(image: str, allowed_registries: Sequence[str]) -> bool:
    """Is the (well-formed) ``image`` under one of the prefixes? Raises ``ValueError`` for a
    malformed reference."""
    full = normalize_image(image)
    return any(full.startswith(normalize_registry_prefix(p)) for p in allowed_registries)


def is_custom_image_option(option: Mapping) -> bool:
    """Does the option's free-form choice set the image (what the local spawner cannot run)?"""
    unlisted = option.get("unlisted_choice") or {}
    return bool(unlisted.get("enabled")) and "image" in (unlisted.get("kubespawner_override") or {})


#: why the local spawner cannot run a custom image
LOCAL_CUSTOM_IMAGE_REASON = ("custom images need the Kubernetes spawner: geoml-hub up runs notebook servers as "
                             "local processes, not containers")


# --------------------------------------------------------------------------------------------
# groups


def user_groups(user: Any) -> Tuple[set, bool]:
    """``(group names, is admin)`` of a JupyterHub ``User`` (or anything with ``groups``/``admin``)."""
    groups = set()
    for g in getattr(user, "groups", None) or ():
        groups.add(g if isinstance(g, str) else g.name)
    return groups, bool(getattr(user, "admin", False))


def profile_allowed(profile: Mapping, groups: Iterable[str], is_admin: bool = False,
                    admin_sees_all: bool = True) -> bool:
    """May a user in ``groups`` use ``profile``? (no ``allowed_groups``: everyone)"""
    allowed = profile.get("allowed_groups") or []
    if not allowed:
        return True
    if is_admin and admin_sees_all:
        return True
    return bool(set(allowed) & set(groups))


def profiles_for_user(profiles: Sequence[Mapping], groups: Iterable[str], is_admin: bool = False,
                      admin_sees_all: bool = True) -> List[Dict[str, Any]]:
    """The profiles a user may see and start, in file order (copies).

    If the file's default profile is not among them, the first one becomes the default, so
    the list a user gets always has exactly one default (unless it is empty).
    """
    groups = set(groups)
    visible = [copy.deepcopy(dict(p)) for p in profiles if profile_allowed(p, groups, is_admin, admin_sees_all)]
    if visible and not any(p.get("default") for p in visible):
        visible[0]["default"] = True
    return visible


def find_profile(profiles: Sequence[Mapping], slug: str) -> Optional[Mapping]:
    return next((p for p in profiles if p.get("slug") == slug), None)


def check_profile_allowed(profiles: Sequence[Mapping], slug: str, groups: Iterable[str], is_admin: bool = False,
                          admin_sees_all: bool = True) -> Mapping:
    """The profile ``slug`` if the user may start it.

    Raises
    ------
    ProfileRequestError
        No profile has that slug (400).
    ProfileNotAllowed
        The user is in none of its ``allowed_groups`` (403).
    """
    profile = find_profile(profiles, slug)
    if profile is None:
        raise ProfileRequestError(f"no profile {slug!r}: the profiles are "
                                  f"{', '.join(repr(p['slug']) for p in profiles)}")
    groups = set(groups)
    if not profile_allowed(profile, groups, is_admin, admin_sees_all):
        raise ProfileNotAllowed(
            f"profile {profile['display_name']!r} ({slug}) is only for members of the group"
            f"{'s' if len(profile['allowed_groups']) > 1 else ''} {', '.join(profile['allowed_groups'])}")
    return profile


# --------------------------------------------------------------------------------------------
# user options (form data → user_options → a checked selection)


def options_from_formdata(formdata: Mapping[str, Sequence[str]]) -> Dict[str, str]:
    """Form data → ``user_options`` exactly as KubeSpawner builds them.

    ``{'profile': ['cpu'], 'profile-option-cpu--resources': ['large']}`` →
    ``{'profile': 'cpu', 'resources': 'large'}``; fields of the other profiles are dropped.
    """
    slug = (formdata.get("profile") or [None])[0]
    options: Dict[str, str] = {}
    if slug:
        options["profile"] = slug
        prefix = f"profile-option-{slug}--"
        for key, values in formdata.items():
            if key.startswith(prefix) and values:
                options[key[len(prefix):]] = values[0]
    return options


@dataclass
class Selection:
    """A checked choice: the profile, the chosen option values and the merged override."""

    profile: Dict[str, Any]
    options: Dict[str, str] = field(default_factory=dict)
    """option name → choice slug, or the typed value for an unlisted choice"""
    override: Dict[str, Any] = field(default_factory=dict)
    """profile's kubespawner_override with the options' overrides merged in (KubeSpawner's order)"""

    @property
    def slug(self) -> str:
        return self.profile["slug"]


def select_profile(profiles: Sequence[Mapping], user_options: Optional[Mapping], groups: Iterable[str] = (),
                   is_admin: bool = False, *, admin_sees_all: bool = True, gpu: Optional["GpuInfo"] = None,
                   username: str = "", custom_images: bool = True) -> Selection:
    """Check ``user_options`` (from the form or the REST API) and return what to start.

    No ``profile`` in the options: the user's default profile (the file's default if the
    user may use it and it can run here, else the first such profile). ``gpu`` (local mode):
    profiles with ``requires_gpu`` need it to be available; ``None`` skips that check
    (Kubernetes: the scheduler finds a GPU node).

    A free-form value of an option with ``allowed_registries`` must match the option's
    ``validation_regex`` and give a well-formed image reference (400), under one of the
    prefixes (403). ``custom_images=False`` (the local spawner, which runs no containers)
    refuses any free-form value that sets the image with 400.

    Raises :class:`ProfileRequestError` (400), :class:`ProfileNotAllowed` (403) or
    :class:`ProfileUnavailable` (400), each with a message for the user.
    """
    user_options = user_options or {}
    if not isinstance(user_options, Mapping):
        raise ProfileRequestError(f"user options must be a mapping, got {_kind(user_options)}")
    groups = set(groups)
    slug = user_options.get("profile")
    if slug in (None, ""):
        visible = profiles_for_user(profiles, groups, is_admin, admin_sees_all)
        runnable = [p for p in visible if gpu is None or unavailable_reason(p, gpu) is None]
        if not runnable:
            who = f" to {username}" if username else ""
            if visible:
                raise ProfileUnavailable(f"no profile available{who} can run here: "
                                         f"{unavailable_reason(visible[0], gpu)}")
            raise ProfileNotAllowed(f"no profile is available{who}: ask an administrator to add you to a group")
        profile = next((p for p in runnable if p.get("default")), runnable[0])
        profile = find_profile(profiles, profile["slug"])
    else:
        if not isinstance(slug, str):
            raise ProfileRequestError(f"profile must be a profile slug (a string), got {slug!r}")
        profile = check_profile_allowed(profiles, slug, groups, is_admin, admin_sees_all)
        if gpu is not None:
            reason = unavailable_reason(profile, gpu)
            if reason:
                raise ProfileUnavailable(f"profile {profile['display_name']!r} ({slug}) cannot start here: {reason}")
    override = copy.deepcopy(profile.get("kubespawner_override") or {})
    chosen: Dict[str, str] = {}
    for name, option in (profile.get("profile_options") or {}).items():
        choices = option.get("choices") or {}
        unlisted = option.get("unlisted_choice") or {}
        typed = user_options.get(f"{name}--unlisted-choice")
        value = user_options.get(name)
        label = f"option {option.get('display_name', name)!r} of profile {profile['slug']!r}"
        if typed not in (None, ""):
            if not unlisted.get("enabled"):
                raise ProfileRequestError(f"{label} takes no free-form value")
            if not isinstance(typed, str):
                raise ProfileRequestError(f"{label}: the value must be a string, got {typed!r}")
            if not custom_images and is_custom_image_option(option):
                raise ProfileUnavailable(f"{label}: {LOCAL_CUSTOM_IMAGE_REASON}")
            regex = unlisted.get("validation_regex")
            if regex and not re.match(regex, typed):
                raise ProfileRequestError(f"{label}: {typed!r} is refused: "
                                          f"{unlisted.get('validation_message') or 'it must match ' + regex}")
            formatted = _format_value(copy.deepcopy(unlisted.get("kubespawner_override") or {}), typed)
            registries = option.get("allowed_registries")
            if registries:
                _check_custom_image(label, formatted.get("image"), registries)
            chosen[name] = typed
            _merge(override, formatted)
            continue
        if value == "unlisted-choice" and unlisted.get("enabled"):
            raise ProfileRequestError(f"{label}: type a value for "
                                      f"{unlisted.get('display_name') or option.get('display_name', name)!r}")
        if value in (None, ""):
            value = next((k for k, c in choices.items() if c.get("default")), next(iter(choices), None))
            if value is None:
                raise ProfileRequestError(f"{label}: a value is required")
        if not isinstance(value, str) or value not in choices:
            raise ProfileRequestError(f"{label}: no choice {value!r}; the choices are {', '.join(choices)}")
        chosen[name] = value
        _merge(override, copy.deepcopy(choices[value].get("kubespawner_override") or {}))
    return Selection(profile=copy.deepcopy(dict(profile)), options=chosen, override=override)


def _check_custom_image(label: str, image: Any, registries: Sequence[str]) -> None:
    example = f"{registries[0]}notebook:1.0"
    try:
        allowed = image_allowed(image, registries)
    except ValueError:
        raise ProfileRequestError(f"{label}: {image!r} is not a container image reference "
                                  f"([registry/]name[:tag][@digest], e.g. {example})") from None
    if not allowed:
        raise ProfileNotAllowed(f"{label}: image {image!r} is not from an allowed registry; custom images must "
                                f"come from {' or '.join(registries)}")


def default_choices(profile: Mapping) -> Dict[str, str]:
    """option name → its default choice (the one marked ``default``, else the first)."""
    out = {}
    for name, option in (profile.get("profile_options") or {}).items():
        choices = option.get("choices") or {}
        first = next((k for k, c in choices.items() if c.get("default")), next(iter(choices), None))
        if first is not None:
            out[name] = first
    return out


def _merge(target: Dict[str, Any], update: Mapping[str, Any]) -> None:
    """KubeSpawner's override semantics: dicts merge recursively, ``None`` removes a key.

    The same rule as ``kubespawner.utils.recursive_update`` (which ``KubeSpawner._apply_overrides``
    uses), written here because that function cannot be imported alone: importing
    ``kubespawner.utils`` runs ``kubespawner/__init__.py``, which imports ``KubeSpawner`` and
    with it kubernetes_asyncio and JupyterHub, and ``geoml-hub up`` installs (the ``hub``
    extra) have no kubespawner at all.
    """
    for key, value in update.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _format_value(obj: Any, value: str) -> Any:
    if isinstance(obj, str):
        return obj.replace("{value}", value)
    if isinstance(obj, list):
        return [_format_value(v, value) for v in obj]
    if isinstance(obj, dict):
        return {_format_value(k, value): _format_value(v, value) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------------------------
# the local GPU


@dataclass(frozen=True)
class GpuInfo:
    """What PyTorch sees: ``available``, device ``count``, ``names`` and, if none, the ``reason``."""

    available: bool
    count: int = 0
    names: Tuple[str, ...] = ()
    reason: str = ""


_GPU_PROBE = r"""
import json
try:
    import torch
except Exception as exc:
    print(json.dumps({"error": "PyTorch cannot be imported: %s" % (exc,)}))
    raise SystemExit(0)
ok = torch.cuda.is_available()
n = torch.cuda.device_count() if ok else 0
print(json.dumps({"available": bool(ok and n), "count": n, "torch": torch.__version__,
                  "cuda": torch.version.cuda, "names": [torch.cuda.get_device_name(i) for i in range(n)]}))
"""

_gpu_lock = threading.Lock()
_gpu_cache: Optional[GpuInfo] = None


def detect_gpu(*, refresh: bool = False, python: Optional[str] = None, timeout: float = 120.0) -> GpuInfo:
    """Does PyTorch see a CUDA GPU? Asked once per process, in a subprocess.

    The subprocess keeps torch (and CUDA's initialisation) out of the hub process; the answer
    is cached (``refresh=True`` asks again). It inherits the environment, so the hub's
    ``CUDA_VISIBLE_DEVICES`` counts.
    """
    global _gpu_cache
    with _gpu_lock:
        if _gpu_cache is not None and not refresh:
            return _gpu_cache
        _gpu_cache = _probe_gpu(python or sys.executable, timeout)
        return _gpu_cache


def _probe_gpu(python: str, timeout: float) -> GpuInfo:
    try:
        proc = subprocess.run([python, "-c", _GPU_PROBE], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return GpuInfo(False, reason=f"the GPU check (PyTorch in a subprocess) took more than {timeout:g} s")
    except OSError as exc:
        return GpuInfo(False, reason=f"the GPU check could not run {python}: {exc}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return GpuInfo(False, reason=f"the GPU check failed: {tail}")
    info = json.loads(lines[-1])
    if "error" in info:
        return GpuInfo(False, reason=info["error"])
    if info["available"]:
        return GpuInfo(True, int(info["count"]), tuple(info["names"]))
    if not info.get("cuda"):
        reason = f"no GPU: PyTorch {info['torch']} here is a CPU-only build"
    elif os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        reason = "no GPU: the hub runs with CUDA_VISIBLE_DEVICES empty"
    else:
        reason = f"no GPU: PyTorch {info['torch']} (CUDA {info['cuda']}) sees no CUDA device"
    return GpuInfo(False, reason=reason)


def gpus_needed(profile: Mapping, override: Optional[Mapping] = None) -> int:
    """GPUs a profile asks for: ``extra_resource_limits['nvidia.com/gpu']``, 1 if only
    ``requires_gpu``, 0 for a CPU profile."""
    if not profile.get("requires_gpu"):
        return 0
    override = profile.get("kubespawner_override") or {} if override is None else override
    return int((override.get("extra_resource_limits") or {}).get(GPU_RESOURCE, "1"))


def unavailable_reason(profile: Mapping, gpu: Optional[GpuInfo]) -> Optional[str]:
    """Why ``profile`` cannot run on this machine, or ``None`` if it can."""
    need = gpus_needed(profile)
    if not need or gpu is None:
        return None
    if not gpu.available:
        return gpu.reason or "no GPU that PyTorch can see"
    if need > gpu.count:
        return f"needs {need} GPUs, PyTorch sees {gpu.count}"
    return None


# --------------------------------------------------------------------------------------------
# local mode: choices beyond this machine

#: JupyterHub's byte suffixes (``mem_limit``: ``K``, ``M``, ``G``, ``T`` are powers of 1024)
_BYTE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_bytes(value: Any) -> Optional[int]:
    """A memory size as JupyterHub reads ``mem_limit`` (``8G`` = 8 GiB; ``Gi`` is taken the
    same), in bytes; ``None`` if it is not one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)i?B?\s*", str(value or ""))
    return int(float(m.group(1)) * _BYTE_UNITS[m.group(2)]) if m else None


@dataclass(frozen=True)
class Machine:
    """What one machine has for the notebook servers: CPU cores and memory (bytes)."""

    cpus: int
    memory: int

    @classmethod
    def here(cls) -> "Machine":
        return cls(cpus=os.cpu_count() or 1, memory=psutil.virtual_memory().total)


def _gb(n: float) -> str:
    return f"{n / 1024**3:.0f} GB" if n >= 10 * 1024**3 else f"{n / 1024**3:.1f} GB"


def beyond_machine(override: Mapping[str, Any], machine: Machine) -> Optional[str]:
    """Why the ``cpu_limit``/``mem_limit`` of a ``kubespawner_override`` exceed ``machine``
    (e.g. "needs 4 cores, this machine has 2"), or ``None`` if they fit (or are not set)."""
    reasons = []
    cpu = override.get("cpu_limit")
    if cpu is not None and float(cpu) > machine.cpus:
        reasons.append(f"needs {float(cpu):g} cores, this machine has {machine.cpus}")
    mem = parse_bytes(override.get("mem_limit"))
    if mem is not None and mem > machine.memory:
        reasons.append(f"needs {_gb(mem)} of memory, this machine has {_gb(machine.memory)}")
    return "; ".join(reasons) or None


def choices_beyond_machine(profile: Mapping, machine: Machine) -> Dict[str, Dict[str, str]]:
    """``{option: {choice: reason}}``: the choices of ``profile`` whose own resource limits
    exceed ``machine`` (what the local spawn form disables). An option's default choice is
    never listed, so every profile keeps a choice to start with."""
    out: Dict[str, Dict[str, str]] = {}
    for name, option in (profile.get("profile_options") or {}).items():
        choices = option.get("choices") or {}
        default = next((k for k, c in choices.items() if c.get("default")), next(iter(choices), None))
        for slug, choice in choices.items():
            reason = None if slug == default else beyond_machine(choice.get("kubespawner_override") or {}, machine)
            if reason:
                out.setdefault(name, {})[slug] = reason
    return out


# --------------------------------------------------------------------------------------------
# local mode: a profile → LocalProcessSpawner settings


def local_settings(selection: Union[Selection, Mapping], gpu: Optional[GpuInfo] = None,
                   visible_devices: Optional[str] = None) -> Dict[str, Any]:
    """The settings the local spawner applies for a profile (or a :class:`Selection`).

    Returns ``{"environment": {...}, "mem_limit", "mem_guarantee", "cpu_limit",
    "cpu_guarantee", "default_url"` (where the profile sets them), "ignored": [keys only
    KubeSpawner uses]}``. The environment is the profile's ``environment`` plus:

    - ``GEOML_DEVICE``: ``cuda`` for a ``requires_gpu`` profile, else ``cpu``;
    - ``CUDA_VISIBLE_DEVICES``: ``''`` for a CPU profile (PyTorch then sees no GPU); for a
      GPU profile the first N of the hub's ``CUDA_VISIBLE_DEVICES`` (``visible_devices``),
      else ``0..N-1``, N from ``extra_resource_limits['nvidia.com/gpu']`` (default 1);
    - ``GEOML_PROFILE``: the slug;
    - ``OMP_NUM_THREADS``: ``floor(cpu_limit)`` (at least 1, at most the machine's cores)
      unless the profile sets it —
      PyTorch's CPU threads are the one CPU limit that holds on a shared machine.
    """
    if not isinstance(selection, Selection):
        selection = Selection(profile=dict(selection), override=copy.deepcopy(selection.get("kubespawner_override")
                                                                              or {}))
    profile, override = selection.profile, selection.override
    env = {str(k): str(v) for k, v in (override.get("environment") or {}).items()}
    need = gpus_needed(profile, override)
    if need:
        if visible_devices is None:
            visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = [d.strip() for d in visible_devices.split(",") if d.strip()] if visible_devices else []
        if not devices:
            devices = [str(i) for i in range(max(need, gpu.count if gpu and gpu.available else need))]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices[:need])
        env["GEOML_DEVICE"] = "cuda"
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["GEOML_DEVICE"] = "cpu"
    env["GEOML_PROFILE"] = profile["slug"]
    settings: Dict[str, Any] = {"environment": env}
    for key in ("mem_limit", "mem_guarantee", "cpu_limit", "cpu_guarantee", "default_url"):
        if override.get(key) is not None:
            settings[key] = override[key]
    if settings.get("cpu_limit") and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, min(math.floor(float(settings["cpu_limit"])), os.cpu_count() or 1)))
    settings["ignored"] = sorted(k for k in override if k not in LOCAL_OVERRIDE_KEYS)
    return settings


# --------------------------------------------------------------------------------------------
# Kubernetes: KubeSpawner's profile_list


def kubespawner_profile_list(profiles: Sequence[Mapping]) -> List[Dict[str, Any]]:
    """The profiles as KubeSpawner's ``profile_list`` (deep copies): geoml-hub's keys
    (``allowed_groups``, ``requires_gpu``, options' ``allowed_registries``) stripped, ``GEOML_PROFILE`` added to the
    environment. Filtering by group is :class:`ProfileListForUser`'s job."""
    out = []
    for p in profiles:
        q = {k: copy.deepcopy(v) for k, v in p.items() if k in KUBESPAWNER_KEYS}
        if not q.get("profile_options"):
            q.pop("profile_options", None)
        for option in (q.get("profile_options") or {}).values():
            for key in OPTION_EXTENSION_KEYS:
                option.pop(key, None)
        override = q.setdefault("kubespawner_override", {})
        override.setdefault("environment", {}).setdefault("GEOML_PROFILE", p["slug"])
        out.append(q)
    return out


class ProfileListForUser:
    """A callable ``profile_list(spawner)`` for KubeSpawner: the user's profiles only.

    KubeSpawner calls it both when it renders the form and when it loads the submitted
    options, so a profile outside the user's groups is neither shown nor started (KubeSpawner
    itself then says "No such profile"; ``GeomlKubeSpawner`` refuses it first with a 403).
    ``profiles`` holds the full validated list (extension keys included).
    """

    def __init__(self, profiles: Sequence[Mapping], admin_sees_all: Optional[bool] = None):
        self.profiles = [copy.deepcopy(dict(p)) for p in profiles]
        self.admin_sees_all = admin_sees_all

    def for_spawner(self, spawner: Any) -> List[Dict[str, Any]]:
        groups, is_admin = user_groups(spawner.user)
        admin_all = self.admin_sees_all
        if admin_all is None:
            admin_all = getattr(spawner, "admin_sees_all_profiles", True)
        return kubespawner_profile_list(profiles_for_user(self.profiles, groups, is_admin, admin_all))

    def __call__(self, spawner: Any) -> List[Dict[str, Any]]:
        return self.for_spawner(spawner)

    def __repr__(self) -> str:
        return f"ProfileListForUser({[p['slug'] for p in self.profiles]})"


def kubespawner_check_user_options(spawner: Any) -> Selection:
    """Submit-time check for a KubeSpawner whose ``profile_list`` is a
    :class:`ProfileListForUser`: usable as (part of) ``pre_spawn_hook``.

    Raises ``tornado.web.HTTPError`` 403 for a profile outside the user's groups, 400 for an
    unknown profile or choice.
    """
    plist = getattr(spawner, "profile_list", None)
    if not isinstance(plist, ProfileListForUser):
        raise TypeError("kubespawner_check_user_options needs c.KubeSpawner.profile_list = ProfileListForUser(...)")
    groups, is_admin = user_groups(spawner.user)
    admin_all = plist.admin_sees_all if plist.admin_sees_all is not None else getattr(
        spawner, "admin_sees_all_profiles", True)
    try:
        return select_profile(plist.profiles, spawner.user_options or {}, groups, is_admin, admin_sees_all=admin_all,
                              username=getattr(spawner.user, "name", ""))
    except ProfileRequestError as exc:
        raise http_error(exc) from None


def http_error(exc: ProfileRequestError):
    """``tornado.web.HTTPError`` with the status and message of ``exc``; JupyterHub shows the
    message as it is on the spawn form (``jupyterhub_message``) and in REST API errors."""
    from tornado import web

    message = str(exc)
    err = web.HTTPError(exc.status, "%s", message)
    err.jupyterhub_message = message
    return err
