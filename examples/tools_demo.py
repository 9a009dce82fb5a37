"""Two user tools for Planflow's worked example (README, "Tools").

    python flows/run.py "Work out a 15% tip on 84.20 EUR, save it and tell the team" \
        --tools examples/tools_demo.py --mcp "python examples/mcp_demo.py"

`convert_currency` has no side effect: marked idempotent, it may be run again
after a crash. `notify_team` has one (it "sends" a message: here, a line appended
to `notices.log` in the working directory); it is not idempotent, so Planflow
never runs a started-but-unfinished call again. It takes an `idempotency_key`,
which Planflow fills (the model never sees it) with a key that is the same for
this call across resumes: a real messaging or payment API would be passed that
key and drop the duplicate itself; here the log refuses a key it already holds.
"""

from __future__ import annotations

from pathlib import Path

from planner.tools import tool

RATES_TO_EUR = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "CHF": 1.04, "JPY": 0.0061}
NOTICES = Path("notices.log")


@tool(idempotent=True)
def convert_currency(amount: float, from_currency: str, to_currency: str) -> str:
    """Convert an amount of money between EUR, USD, GBP, CHF and JPY (fixed demo rates).

    Args:
        amount: how much money, in `from_currency`.
        from_currency: ISO code of the currency the amount is in, e.g. "USD".
        to_currency: ISO code of the currency wanted, e.g. "EUR".
    """
    try:
        eur = amount * RATES_TO_EUR[from_currency.upper()]
        value = eur / RATES_TO_EUR[to_currency.upper()]
    except KeyError as exc:
        raise ValueError(f"unknown currency {exc.args[0]!r}; known: {', '.join(RATES_TO_EUR)}") from None
    return f"{amount:.2f} {from_currency.upper()} = {value:.2f} {to_currency.upper()}"


@tool
def notify_team(team: str, message: str, idempotency_key: str) -> str:
    """Send a short message to a team (a side effect: not safe to repeat).

    Args:
        team: the team's name, e.g. "ops".
        message: what to tell them, one or two sentences.
    """
    seen = NOTICES.read_text(encoding="utf-8") if NOTICES.exists() else ""
    if f"[{idempotency_key}]" in seen:
        return f"already sent to {team} (same idempotency key): not sent twice"
    with NOTICES.open("a", encoding="utf-8") as log:
        log.write(f"[{idempotency_key}] to {team}: {message}\n")
    return f"sent to {team}"
