"""One-time form values: a reloaded or replayed "create key" POST must create nothing.

Each rendered create form carries a random value kept in the session; creating spends it. A
browser reload re-sends the spent value, finds it gone, and gets a redirect instead of a second
token (and instead of a key shown twice). The key page and the admin's add form share this.
"""

import secrets

SESSION_KEY = "keys_form_once"
KEPT = 20  # open tabs with a create form, per session
FIELD = "form_once"


def issue(request) -> str:
    value = secrets.token_urlsafe(16)
    pending = request.session.get(SESSION_KEY, [])
    request.session[SESSION_KEY] = [*pending, value][-KEPT:]
    return value


def is_fresh(request, value: str) -> bool:
    return bool(value) and value in request.session.get(SESSION_KEY, [])


def spend(request, value: str) -> bool:
    """Use the value up; False when it was not fresh (already used, or never issued)."""
    if not is_fresh(request, value):
        return False
    pending = request.session[SESSION_KEY]
    pending.remove(value)
    request.session[SESSION_KEY] = pending
    return True
