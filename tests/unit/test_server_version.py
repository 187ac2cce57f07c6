"""The refusal of a nats-server too old for the features in use: one line naming the
version required (the version comes from nats-py's own ServerVersion, as connected)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from nats.aio.client import ServerVersion

from actorsource._errors import ServerTooOldError
from actorsource._mailbox.connection import require_server_version


@dataclass
class Connected:
    """What a connection reports of its server (nc.connected_server_version)."""

    version: str

    @property
    def connected_server_version(self) -> ServerVersion:
        return ServerVersion(self.version)


@pytest.mark.parametrize("version", ["2.9.10", "2.10.22"])
def test_a_server_older_than_needed_is_refused_in_one_line_naming_the_version(
    version: str,
) -> None:
    with pytest.raises(ServerTooOldError) as caught:
        require_server_version(Connected(version), (2, 11), "cluster mode")  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    assert message == (
        f"nats-server {version} is too old: cluster mode needs nats-server 2.11 or newer"
    )
    assert caught.value.required == "2.11"


@pytest.mark.parametrize("version", ["2.11.0", "2.15.1", "3.0.0"])
def test_a_recent_enough_server_is_accepted(version: str) -> None:
    require_server_version(Connected(version), (2, 11), "cluster mode")  # type: ignore[arg-type]
