"""The bank's accounts as keyed entities: one state per account, deposits and withdrawals.

The same events (``examples.bank.Deposited`` and ``Withdrawn``), subjects
(``bank.<kind>.<account>``, the account is token 2), stream (``ACCOUNTS``) and rules as the
singleton ``examples.bank:Accounts`` (a withdrawal that would overdraw is declined and
changes nothing; ``withdrawn`` takes a Context, as there). Transfers touch two accounts,
so they are no entity's: neither actor here handles them.

* :class:`AccountEntities` (``max_resident=10_000``, the defaults otherwise):
  ``bench/entities.py`` runs it against the singleton on the same messages, through the
  same consumer filter (``bank.>``, the stream's own subjects; the key is token 2).
  :class:`NarrowAccounts` is the singleton on ``bank.*.*``: nats-server delivers a
  consumer whose filter is narrower than its stream's subjects markedly slower, so the
  benchmark reports that apart rather than let it pass for the cost of entities.
* :class:`ChurningAccounts`: a handful resident at most, a snapshot every 5 events of an
  entity, passivated after half a second idle, so that entities are loaded and passivated
  all the time; ``bench/chaos.py --entities A`` hosts it in worker processes
  (``bench._bank_entities:ChurningAccounts``, imported from the checkout's root).

Each account answers the query ``view`` (its balance and declined count), which
``bench/chaos.py --entities A --queries C`` asks while workers are killed.
"""

from __future__ import annotations

from actorsource import Context, actor, entity, handles, query
from examples import bank

__all__ = ["AccountEntities", "ChurningAccounts", "NarrowAccounts", "fold_account"]


class _Account:
    """One account: its balance, and how many of its withdrawals were declined."""

    balance: int
    declined: int

    def __init__(self) -> None:
        self.balance = 0
        self.declined = 0

    @handles(bank.Deposited)
    def deposited(self, event: bank.Deposited) -> None:
        self.balance += event.amount

    @handles(bank.Withdrawn)
    def withdrawn(self, event: bank.Withdrawn, ctx: Context) -> None:
        if self.balance < event.amount:
            self.declined += 1
            return
        self.balance -= event.amount

    @query
    def view(self) -> dict[str, int]:
        """The account: its balance and how many of its withdrawals were declined."""
        return {"balance": self.balance, "declined": self.declined}


@entity(
    "accounts-by-key",
    subjects=["bank.>"],
    key_token=2,
    stream="ACCOUNTS",
    stream_subjects=["bank.>"],
    max_resident=10_000,
)
class AccountEntities(_Account):
    """The bank's accounts, one entity per account."""


@entity(
    "accounts-churn",
    subjects=["bank.*.*"],
    key_token=2,
    stream="ACCOUNTS",
    stream_subjects=["bank.>"],
    max_resident=4,
    passivate_after=0.5,
    snapshot_every=5,
    keep=3,
)
class ChurningAccounts(_Account):
    """The bank's accounts, loaded and passivated all the time (for crash tests)."""


@actor(
    "accounts-narrow",
    subjects=["bank.*.*"],
    stream="ACCOUNTS",
    stream_subjects=["bank.>"],
    snapshot_every=1_000,
)
class NarrowAccounts(bank.Accounts):
    """The singleton bank, its consumer filtered on ``bank.*.*`` (the stream's messages all
    match it)."""


def fold_account(events: list[bank.BankEvent]) -> tuple[int, int]:
    """An independent fold of one account's events: (balance, declined)."""
    balance = declined = 0
    for event in events:
        if isinstance(event, bank.Deposited):
            balance += event.amount
        elif isinstance(event, bank.Withdrawn):
            if balance < event.amount:
                declined += 1
            else:
                balance -= event.amount
        else:
            raise TypeError(f"an account entity has no {type(event).__name__} events")
    return balance, declined
