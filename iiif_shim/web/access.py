"""Access to restricted images, PDFs and texts, on the HTTP side: the gate's verdict for a
request, the headers of restricted answers, the audit lines of refusals, the auth services a
restricted resource declares, and the Auth 2.0 probes (``/auth/probe/image/{identifier}``,
``/auth/probe/pdf/{object}``).

The rules, in one place:

- A route's ``access`` names the policy of its images (``core/routing.py``); an object's policy
  is its own ``access``, else its source's, else none (``presentation/records.py``); a PDF
  needs the policy of its object and of every image in it that has one.
- The verdict (``auth/gate.py``) is asked for **before** anything reads a cache tier or the
  backend for the resource: ``full`` serves it as for a public one; the rest answer 401 (an
  info.json with a degraded tier: 302 to it). A bearer token counts for info.json and probes
  only (Auth 1.0 clients send one there), never for images or PDFs.
- An object's text and its search (``web/search.py``) need what its PDF needs: the same
  policies, the same cookies.
- Every refusal of an info.json, a PDF, an object's text or a probe writes a ``refused``
  audit line with the identifier (:func:`audit_refusal`); a refused image only when it
  carried a cookie or token of the policy that did not verify (:func:`presented` says why).
  Repeats are throttled by the audit log itself (``auth/audit.py``: one line per refusal,
  address and reason per 10 s).
- Answers that depend on who asks (the image itself, its 401s and 302s, a restricted
  object's text and search results) are
  ``Cache-Control: private`` (``no-store`` for refusals, so a login is seen at once) with
  ``Vary: Cookie, Authorization``: a shared cache in front never keeps them for someone else.
  The degraded tier and the documents (manifests, object pages) are the same for everyone and
  keep the server's own caching.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from iiif_shim.auth.documents import probe_result, with_auth2_context
from iiif_shim.auth.documents import services as auth_services
from iiif_shim.auth.gate import Caller, Gate, Tier, Verdict, cookie_name
from iiif_shim.auth.settings import PolicySettings
from iiif_shim.auth.signing import Purpose
from iiif_shim.base.errors import NotFound
from iiif_shim.iiif.profile import Version
from iiif_shim.presentation.documents import degraded_url, image_services
from iiif_shim.web.auth import caller_of, probe_answer
from iiif_shim.web.protocol import decode_segment
from iiif_shim.web.runtime import Runtime
from iiif_shim.web.state import observed, runtime_of

VARY = "Cookie, Authorization"
REFUSED_CACHE = "no-store"
MAX_PROBE_SEGMENT = 1024


def decide(request: web.Request, runtime: Runtime, policy: str, *, bearer_ok: bool) -> Verdict:
    """The gate's verdict on this request for ``policy``."""
    gate = runtime.gate
    return gate.decide(policy, caller_of(request, gate), bearer_ok=bearer_ok)


def policy_of(runtime: Runtime, name: str) -> PolicySettings:
    return runtime.settings.auth.policies[name]


def degraded_size(runtime: Runtime, policy: str | None) -> int | None:
    """The longest side of ``policy``'s degraded tier; ``None`` when it has none (or the
    resource is public)."""
    if policy is None:
        return None
    degraded = policy_of(runtime, policy).degraded
    return None if degraded is None else degraded.max_size


def private(headers: dict[str, Any], *, refused: bool = False) -> dict[str, Any]:
    """``headers`` made those of an answer for this caller alone (see the module's text)."""
    if refused:
        headers["Cache-Control"] = REFUSED_CACHE
        headers.pop("ETag", None)
        headers.pop("Last-Modified", None)
    else:
        kept = [
            part.strip()
            for part in headers.get("Cache-Control", "").split(",")
            if part.strip()
            and part.strip().lower() not in ("public", "private")
            and not part.strip().lower().startswith("s-maxage")
        ]
        headers["Cache-Control"] = ", ".join(["private", *kept])
    vary = headers.get("Vary")
    headers["Vary"] = f"{vary}, {VARY}" if vary else VARY
    return headers


def allowed(request: web.Request, runtime: Runtime, policies: Sequence[str]) -> bool:
    """Whether this request has full access under every one of ``policies`` (cookies only:
    what an image or a PDF needs)."""
    return all(decide(request, runtime, p, bearer_ok=False).tier is Tier.FULL for p in policies)


def refusal(text: str) -> web.Response:
    """A 401 with a text body (an image, a PDF): nothing of the resource."""
    return web.Response(status=401, text=text + "\n", headers=private({}, refused=True))


def presented(gate: Gate, policy: str, caller: Caller) -> str | None:
    """Why the cookie or token of ``policy`` that ``caller`` sent did not open it (``cookie
    invalid``: forged, malformed, another key or policy; ``cookie expired``; ``cookie
    revoked``: logged out; the same for a token); ``None`` when it sent none, or one that is
    valid (a token on an image, which takes cookies only)."""
    cookie = caller.cookies.get(cookie_name(policy))
    if cookie:
        claims, why = gate.signer.examine(Purpose.SESSION, cookie)
        if claims is None:
            return f"cookie {why}"
        if claims.get("p") != policy:
            return "cookie invalid"
        if gate.session(policy, caller) is None:
            return "cookie revoked"
        return None
    if caller.bearer:
        claims, why = gate.signer.examine(Purpose.TOKEN, caller.bearer)
        if claims is None:
            return f"token {why}"
        if claims.get("p") != policy:
            return "token invalid"
        if not gate.decide(policy, caller, bearer_ok=True).full:
            return "token revoked"
    return None


def audit_refusal(
    request: web.Request,
    runtime: Runtime,
    policy: str,
    identifier: str,
    verdict: Verdict | None = None,
    *,
    always: bool = True,
) -> None:
    """Write the ``refused`` audit line of a refused resource (``identifier``: an image's, or
    an object's for its PDF). ``always``: an info.json, PDF or probe; otherwise (an image)
    only when the request carried a cookie or token of ``policy`` that did not verify. The
    audit log leaves out repeats (``auth/audit.py``): a tile storm does not flood it."""
    gate = runtime.gate
    caller = caller_of(request, gate)
    why = presented(gate, policy, caller)
    if not always and why is None:
        return
    if why is None:
        tier = verdict.tier if verdict is not None else Tier.NONE
        why = "not logged in" + (" (degraded tier)" if tier is Tier.DEGRADED else "")
    gate.audit.event(
        "refused",
        policy=policy,
        user=None,
        address=caller.address,
        identifier=identifier,
        reason=why,
    )


def _refused_object(
    request: web.Request, runtime: Runtime, name: str, policies: Sequence[str], text: str
) -> web.Response:
    """The 401 of a restricted object's PDF or text, audited (one line per policy it lacks)."""
    for policy in policies:
        verdict = decide(request, runtime, policy, bearer_ok=False)
        if verdict.tier is not Tier.FULL:
            audit_refusal(request, runtime, policy, name, verdict)
    return refusal(text)


def refused_pdf(
    request: web.Request, runtime: Runtime, name: str, policies: Sequence[str]
) -> web.Response:
    """The 401 of a restricted PDF."""
    text = "this PDF is restricted: log in (see the manifest's services)"
    return _refused_object(request, runtime, name, policies, text)


def refused_text(
    request: web.Request, runtime: Runtime, name: str, policies: Sequence[str]
) -> web.Response:
    """The 401 of a restricted object's text or search (it needs what the object's PDF
    needs)."""
    text = "the text of this object is restricted: log in (see the manifest's services)"
    return _refused_object(request, runtime, name, policies, text)


def services(
    runtime: Runtime, policy: str, site: str, probe_url: str | None, *, v3: bool
) -> list[dict[str, Any]]:
    """What a restricted resource declares: the Auth 2.0 probe (``probe_url``; ``None`` for
    the degraded tier, which everyone may see: a substitute with no probe is accessible, and
    it must not share the full image's), then the Auth 1.0 cookie service (with its token and
    logout services: 1.0 viewers offer the login from it). In a 2.x document each carries its
    own ``@context``; in 3.0 the auth/2 context is the document's (``with_auth2_context``)."""
    return auth_services(policy_of(runtime, policy), policy, site, probe_url, v3=v3)


def declared(
    doc: dict[str, Any],
    runtime: Runtime,
    policy: str,
    site: str,
    probe_url: str | None,
    version: Version,
) -> dict[str, Any]:
    """``doc`` (an info.json) with the services of ``policy`` added to its ``service``."""
    v3 = version is Version.V3
    found = services(runtime, policy, site, probe_url, v3=v3)
    doc = dict(doc)
    doc["service"] = [*doc.get("service", []), *found]
    return with_auth2_context(doc) if v3 and probe_url is not None else doc


def degraded_services(base: str, identifier: str) -> list[dict[str, Any]]:
    """The degraded tier's image services (3.0 and 2.1), as a probe's ``substitute``, in the
    form the manifests use (``base``: site + IIIF prefix)."""
    return image_services(
        degraded_url(base, Version.V3, identifier), degraded_url(base, Version.V2, identifier)
    )


async def probe_request(request: web.Request, rest: str) -> web.Response:
    """``/auth/probe/{image|pdf}/{name}``: an Auth 2.0 probe (always HTTP 200; the verdict in
    its body, a token by ``Authorization: Bearer``). 404 for a resource that is not
    restricted (it has no probe)."""
    runtime = runtime_of(request)
    observed(request).endpoint = "probe"
    kind, _, segment = rest.partition("/")
    if kind not in ("image", "pdf") or not segment or "/" in segment:
        raise NotFound(
            "not a probe: expected /auth/probe/image/{identifier} or /auth/probe/pdf/{object}"
        )
    if len(segment) > MAX_PROBE_SEGMENT:
        raise NotFound("no such resource")
    name = decode_segment(segment, "identifier" if kind == "image" else "object")
    public, headers = runtime.public, request.headers
    substitute: list[dict[str, Any]] | None = None
    if kind == "image":
        policy = runtime.service.router.route(name).access
        policies: tuple[str, ...] = () if policy is None else (policy,)
        if degraded_size(runtime, policy) is not None:
            base = public.base(request.scheme, request.host, headers)
            substitute = degraded_services(base, name)
    else:
        record = await runtime.presentation.record(name)
        policies = runtime.presentation.pdf_policies(record)
    if not policies:
        raise NotFound(f"this {kind} is not restricted: it has no probe")
    denied = [
        p for p in policies if decide(request, runtime, p, bearer_ok=True).tier is not Tier.FULL
    ]
    for policy in denied:
        audit_refusal(request, runtime, policy, name)
    policy_settings = policy_of(runtime, denied[0]) if denied else None
    doc = probe_result(
        401 if denied else 200,
        substitute=substitute if denied else None,
        policy=policy_settings,
    )
    return probe_answer(doc)
