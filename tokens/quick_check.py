"""The model of a new key's quick check: one the key really reaches for a chat completion.

The key page shows a ready curl once a key is made; it must answer. So its model is a chat
model (not an embedding model) that the key may use, served by a channel routing would try
now: enabled, key readable, able to serve /v1/chat/completions, breaker not open. The groups are
walked in the order the key routes through them and, inside a group, the channels in the order
routing prefers them (highest priority, then the heaviest weight), so the check goes where the
key's requests go. None when there is no such model: the page says so instead of a curl that
fails.
"""

import time

from channels_app import breaker
from channels_app.health import is_embedding_model
from channels_app.price_list import usable_channels
from channels_app.routing import token_groups
from channels_app.routing_table import Table, get_table
from channels_app.transports import serves

ENDPOINT = "chat/completions"


def quick_check_model(token, *, table: Table | None = None) -> str | None:
    table = table or get_table()
    states = breaker.states()
    now = time.time()
    allow = set(token.model_allowlist)
    for group in token_groups(token, table).entries:
        channels = sorted(
            usable_channels(table, group.id), key=lambda ch: (-ch.priority, -ch.weight, ch.name)
        )
        for ch in channels:
            if not serves(ch.kind, ENDPOINT):
                continue
            if (state := states.get(ch.id)) is not None and state.status(now) == breaker.OPEN:
                continue
            for model in sorted(ch.models):
                if not is_embedding_model(model) and (not allow or model in allow):
                    return model
    return None
