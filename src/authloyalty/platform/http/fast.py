"""Fast routes: declared, documented and validated like any FastAPI route, served without
FastAPI's per-request dependency resolution.

A route whose class is :class:`FastRoute` is declared once, with the usual decorator
arguments and signature; OpenAPI comes from that declaration as for every route, and so does
the request's resolution: when the route is built, the :class:`~fastapi.dependencies.models.
Dependant` FastAPI computed from the signature is turned into a flat plan (which dependencies
to await with the request, which parameters and body to validate), and each request follows
that plan with FastAPI's own validation functions. What is left out is the generic machinery
around them (exit stacks, the dependency cache, nested resolution, revalidating the returned
model), which cost a visible share of a short request. A route whose signature needs more
than the plan can do is refused when it is declared, not served differently.

``tests/integration/test_fast_routes.py`` sends every fast route the same requests through
the fast resolution and through FastAPI's (:func:`standard_resolution`) and wants the same
bytes back.
"""

from __future__ import annotations

import email.message
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from copy import deepcopy
from dataclasses import dataclass
from functools import lru_cache
from types import UnionType
from typing import Any, Union, get_args, get_origin
from uuid import UUID

from fastapi import FastAPI, params
from fastapi import routing as fastapi_routing
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute, APIRouter
from pydantic_core import PydanticUndefined
from starlette._utils import get_route_path  # the router's own reading of the path
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from authloyalty.platform.http.responses import PrivateJSONResponse

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
# Set in a request's scope, it sends the request through FastAPI's own resolution.
STANDARD = "authloyalty.standard_resolution"


class FastRoute(APIRoute):
    """A route served by the plan derived from its own declaration (see the module)."""

    def get_route_handler(self) -> Handler:
        """The fast handler; FastAPI's own when the request's scope holds :data:`STANDARD`.

        Included in a router, the route is served as the inclusion made it (its prefix and
        its dependencies added to the route's): FastAPI builds the handler of an included
        route with that record set in a context variable, and reads it as its own
        ``APIRoute.get_route_handler`` does. A plan made from the bare declaration would
        leave the inclusion's dependencies out (an authentication gate among them)."""
        standard = super().get_route_handler()
        included = getattr(fastapi_routing, "_effective_route_context_var", None)
        record = included.get() if included is not None else None
        route = record if record is not None and record.original_route is self else self
        return _fast_handler(route, standard)


def standard_resolution(app: ASGIApp) -> ASGIApp:
    """``app`` with every fast route resolved by FastAPI itself (the off switch, and the
    reference the equivalence tests compare against)."""
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, STANDARD: True}, receive, send)
    return wrapped


class FastLane:
    """The application's router with an index in front of it: a request for a fast route
    goes straight to the route's plan, found with one dictionary lookup (a path without
    parameters) or one regular expression per parametrised fast route, instead of FastAPI's
    walk over the routes of every included router (twice: once to match, once to handle)
    and its per-route wrappers (exit stacks, its own exception handling). Every other
    request (other routes, 404, 405, redirects, :data:`STANDARD`) reaches the router as
    before.

    The index keeps FastAPI's order: a fast route is taken only where no route declared
    before it would take the same request (decided when the index is built for a path
    without parameters, and per request for the others, against the earlier routes that
    could match them). The scope gets what FastAPI's router would set (route, endpoint,
    path parameters, router: the metrics and the access log read the route); an exception
    reaches the application's exception middleware, which answers it with the handlers the
    route would have used. Built at the first request, when every route is declared.

    ``tests/integration/test_fast_routes.py`` compares its answers with FastAPI's own, byte
    for byte; ``tests/unit/test_fast_lane.py`` holds it to FastAPI's choice of route.
    """

    def __init__(self, router: APIRouter, app: ASGIApp) -> None:
        self._router = router
        self._app = app
        self._index: _Index | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and STANDARD not in scope:
            index = self._index or self._build()
            found = index.find(scope["method"], get_route_path(scope))
            if found is not None:
                entry, params = found
                path_params = dict(scope.get("path_params", {}))
                path_params.update(params)
                scope["endpoint"] = entry.endpoint
                scope["path_params"] = path_params
                scope["route"] = entry.route
                scope.setdefault("router", self._router)
                response = await entry.plan(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)

    def _build(self) -> _Index:
        self._index = _Index(self._router)
        return self._index


def install_fast_lane(app: FastAPI) -> None:
    """Put a :class:`FastLane` in front of ``app``'s router (inside every middleware and the
    exception handling, as the router itself is)."""
    app.router.middleware_stack = FastLane(app.router, app.router.middleware_stack)


@dataclass(frozen=True)
class _Entry:
    route: FastRoute
    endpoint: Callable[..., Any]
    methods: frozenset[str]
    regex: re.Pattern[str]
    convertors: dict[str, Any]
    plan: Handler
    # The routes declared before it that could take a request it matches (parametrised
    # fast routes only): paths without parameters, with their methods (None: every
    # method), and the others' patterns.
    earlier_paths: dict[str, frozenset[str] | None]
    earlier_patterns: tuple[tuple[re.Pattern[str], frozenset[str] | None], ...]

    def blocked(self, method: str, path: str) -> bool:
        """Whether a route declared earlier takes ``method path``."""
        if path in self.earlier_paths:
            methods = self.earlier_paths[path]
            if methods is None or method in methods:
                return True
        return any(pattern.match(path) and (methods is None or method in methods)
                   for pattern, methods in self.earlier_patterns)


class _Index:
    """The fast routes of a router, in its order (see :class:`FastLane`)."""

    def __init__(self, router: APIRouter) -> None:
        self.paths: dict[tuple[str, str], _Entry] = {}
        self.parametrised: list[_Entry] = []
        earlier_paths: dict[str, frozenset[str] | None] = {}
        earlier_patterns: list[tuple[re.Pattern[str], frozenset[str] | None]] = []
        for route in _in_order(router):
            regex = getattr(route, "path_regex", None)
            if regex is None:  # a route the index cannot reason about: it stops here
                return
            methods = getattr(route, "methods", None)
            methods = frozenset(methods) if methods else None
            convertors = getattr(route, "param_convertors", None) or {}
            literal = getattr(route, "path", None) if not convertors else None
            if isinstance(literal, str) and regex.fullmatch(literal) is None:
                literal = None  # a mount: its pattern is not its path
            original = getattr(route, "original_route", route)
            if (isinstance(original, FastRoute) and methods
                    and getattr(route, "max_body_size", None) is None):
                entry = _Entry(original, route.endpoint, methods, regex, convertors,
                               _plan(route), dict(earlier_paths), tuple(earlier_patterns))
                if literal is None:
                    self.parametrised.append(entry)
                else:
                    for method in methods:
                        if not entry.blocked(method, literal):
                            self.paths.setdefault((method, literal), entry)
            if literal is None:
                earlier_patterns.append((regex, methods))
            elif literal in earlier_paths:
                known = earlier_paths[literal]
                earlier_paths[literal] = (None if known is None or methods is None
                                          else known | methods)
            else:
                earlier_paths[literal] = methods

    def find(self, method: str, path: str) -> tuple[_Entry, dict[str, Any]] | None:
        """The fast route FastAPI would choose for ``method path``, and its path parameters;
        None when it would choose another (or none)."""
        entry = self.paths.get((method, path))
        if entry is not None:
            return entry, {}
        for entry in self.parametrised:
            if method not in entry.methods:
                continue
            match = entry.regex.match(path)
            if match is None:
                continue
            if entry.blocked(method, path):
                return None
            return entry, {name: entry.convertors[name].convert(value)
                           for name, value in match.groupdict().items()}
        return None


def _in_order(router: APIRouter) -> Iterator[Any]:
    """The routes of ``router`` in the order FastAPI tries them, those of included routers
    as FastAPI applies the inclusion to them (prefix, dependencies, response class)."""
    for route in router.routes:
        effective = getattr(route, "effective_route_contexts", None)
        if effective is not None:
            yield from effective()
        else:
            yield route


def _plain_dependency(sub: Dependant, route: str) -> tuple[str | None, Callable[[Request],
                                                                               Awaitable[Any]]]:
    """A dependency the plan can await directly, its name (None: awaited for its effect, as
    the route's or its router's ``dependencies=[...]``) and its call: async, taking the
    request (and nothing else)."""
    request_param = sub.request_param_name or sub.http_connection_param_name
    if (sub.call is None or request_param is None or sub.dependencies
            or sub.path_params or sub.query_params or sub.header_params or sub.cookie_params
            or sub.body_params or sub.background_tasks_param_name
            or sub.response_param_name or sub.security_scopes_param_name
            or not _is_coroutine(sub.call)):
        raise TypeError(f"{route}: a fast route's dependencies must be async and take only "
                        f"the request ({sub.name} does not)")
    return sub.name, sub.call


@dataclass(frozen=True)
class _Field:
    """A parameter or the body, validated as FastAPI validates it (``ModelField.validate``,
    the same error locations), looked up under the one key FastAPI would use."""

    field: Any  # FastAPI's ModelField
    source: str  # the Request attribute holding it: path_params, query_params, ...
    key: str
    loc: tuple[str, ...]

    def resolve(self, value: Any, values: dict[str, Any], errors: list[Any]) -> None:
        """Put the validated ``value`` (undefined: absent) in ``values``, or its errors in
        ``errors``."""
        field = self.field
        if value is PydanticUndefined:
            info = field.field_info
            if info.is_required():
                errors.append({"type": "missing", "loc": self.loc, "msg": "Field required",
                               "input": None})  # FastAPI's own missing-field error
                return
            default = field.default
            value = default if default is None else deepcopy(default)
            if not info.validate_default:
                values[field.name] = value
                return
        value, found = field.validate(value, values, loc=self.loc)
        if found:
            errors.extend(found)
        else:
            values[field.name] = value


_SCALARS = (str, int, float, bool, UUID, type(None))
_SOURCES = {params.ParamTypes.path: "path_params", params.ParamTypes.query: "query_params",
            params.ParamTypes.header: "headers", params.ParamTypes.cookie: "cookies"}


def _param(field: Any, route: str) -> _Field:
    """A single-valued parameter under its plain alias (what the plan supports)."""
    info = field.field_info
    annotation = info.annotation
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (
        annotation,)
    if (not isinstance(info, params.Param)
            or info.validation_alias not in (None, field.alias)
            or not all(member in _SCALARS for member in members)):
        raise TypeError(f"{route}: a fast route's parameters are single values under their "
                        f"alias ({field.name} is not)")
    key = field.alias
    if isinstance(info, params.Header) and info.convert_underscores and key == field.name:
        key = key.replace("_", "-")
    return _Field(field, _SOURCES[info.in_], key, (info.in_.value, key))


def _is_coroutine(call: Callable[..., Any]) -> bool:
    # A function, or an instance whose class defines an async __call__ (as FastAPI checks).
    return inspect.iscoroutinefunction(call) or (
        not inspect.isroutine(call) and inspect.iscoroutinefunction(type(call).__call__))


def _fast_handler(route: Any, standard: Handler) -> Handler:
    fast = _plan(route)

    async def handler(request: Request) -> Response:
        if STANDARD in request.scope:
            return await standard(request)
        return await fast(request)

    return handler


def _plan(route: Any) -> Handler:
    """The plan of ``route``: a :class:`FastRoute`, or FastAPI's record of one included in a
    router (the same attributes, with the inclusion's prefix and dependencies applied)."""
    plan = route.dependant
    name = f"{'/'.join(sorted(route.methods or ()))} {route.path}"
    if (plan.call is None or not _is_coroutine(plan.call) or plan.request_param_name
            or plan.http_connection_param_name or plan.background_tasks_param_name
            or plan.response_param_name or plan.security_scopes_param_name
            or len(plan.body_params) > 1
            or any(isinstance(f.field_info, params.Form) for f in plan.body_params)):
        raise TypeError(f"{name}: a fast route is an async endpoint taking dependencies, "
                        "parameters and at most one JSON body (no request, response, "
                        "background tasks, security scopes or forms)")
    response_class = route.response_class
    if isinstance(response_class, DefaultPlaceholder):
        response_class = response_class.value
    if not (isinstance(response_class, type)
            and issubclass(response_class, PrivateJSONResponse)):
        raise TypeError(f"{name}: a fast route answers with PrivateJSONResponse, whose "
                        "of() renders the returned model as FastAPI would")
    answer_with: type[PrivateJSONResponse] = response_class
    endpoint = plan.call
    dependencies = [_plain_dependency(sub, name) for sub in plan.dependencies]
    # A dependency asked for twice (by the inclusion and by the route, say) runs once per
    # request, as FastAPI's dependency cache runs it (unless it opted out of the cache).
    cached = [sub.call for sub in plan.dependencies if sub.use_cache]
    shared = {call for call in cached if cached.count(call) > 1}
    fields = [_param(f, name) for f in (*plan.path_params, *plan.query_params,
                                        *plan.header_params, *plan.cookie_params)]
    body = None
    if plan.body_params:
        (field,) = plan.body_params
        if getattr(field.field_info, "embed", False):
            raise TypeError(f"{name}: a fast route's body is not embedded")
        body = _Field(field, "", "", ("body",))
    strict = route.strict_content_type
    if isinstance(strict, DefaultPlaceholder):
        strict = strict.value
    status = route.status_code or 200

    async def handler(request: Request) -> Response:
        raw = await _json_body(request, bool(strict)) if body is not None else None
        values: dict[str, Any] = {}
        ran: dict[Any, Any] = {}
        for dependency, call in dependencies:
            if call in ran:
                value = ran[call]
            else:
                value = await call(request)
                if call in shared:
                    ran[call] = value
            if dependency is not None:
                values[dependency] = value
        errors: list[Any] = []  # in FastAPI's order: path, query, header, cookie, body
        for field in fields:
            field.resolve(getattr(request, field.source).get(field.key, PydanticUndefined),
                          values, errors)
        if body is not None:
            body.resolve(raw, values, errors)
        if errors:
            raise RequestValidationError(errors)
        answer = await endpoint(**values)
        if isinstance(answer, Response):
            return answer
        return answer_with.of(answer, status)

    return handler


async def _json_body(request: Request, strict_content_type: bool) -> Any:
    """The body as FastAPI's request handler reads it: nothing → undefined; JSON content
    (or none, when content types are not strict) → parsed; anything else → the bytes, which
    then fail validation. Malformed JSON is 422-``json_invalid`` (our envelope makes it 400),
    any other failure to read or parse 400.

    Read from ``receive`` and kept nowhere: the endpoint of a fast route takes no request,
    so nothing reads the body after the plan."""
    try:
        chunks: list[bytes] = []
        receive = request.receive
        while True:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect()
        raw = b"".join(chunks)
        if not raw:
            return PydanticUndefined
        content_type = request.headers.get("content-type")
        if not content_type:
            return raw if strict_content_type else json.loads(raw)
        return json.loads(raw) if _is_json(content_type) else raw
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{
            "type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
            "input": {}, "ctx": {"error": exc.msg}}], body=exc.doc) from exc
    except Exception as exc:  # a 5,000-digit number, nesting too deep, a client gone
        raise HTTPException(400, "There was an error parsing the body") from exc


@lru_cache(maxsize=64)
def _is_json(content_type: str) -> bool:
    """Whether FastAPI reads a body of ``content_type`` as JSON (its very test, cached:
    parsing the header costs more than the rest of a short request's body handling)."""
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")
