"""The help screen (``?``): keys and what each tab shows."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# pot dashboard

| key | does |
| --- | --- |
| `tab` / `shift+tab` | next / previous tab |
| `1` … `5` | Rig, Training, Consensus, Earnings, Events |
| `/` | type a filter (Events); `esc` leaves it |
| `c` | next event category (all, problems, verdicts, consensus, rig, connection) |
| `?` | this help (`esc` closes it) |
| `q` | quit |

**Rig**: every GPU of the miner (catalog name, ex-ETH figures, temperature, memory junction,
fan, power/limit, utilisation, VRAM, PCIe link), temperature and power sparklines, the verdict
badge (torch runs the card, bf16/fp16, VRAM fit); watchdog pauses in yellow.

**Training**: the model's metric per round (PoT against centralized training on the same
samples), the round's phase and deadline, samples/s, the miner's last verdicts.

**Consensus**: height, view, primary, each validator's state and last-seen height, commit
latency, view changes, evidence and the last round's spot-check sample.

**Earnings**: balance, stake, reward per round, slashes, electricity cost per hour and day
(your price x measured power), per day and per month, per GPU.

**Events**: rejections with reasons, slashes, view changes, disconnections, watchdog actions.

A source that stops answering shows *disconnected, retrying in N s* in the header and comes
back by itself. Everything is read-only.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [  # noqa: RUF012 - textual's class-level binding list
        Binding("escape", "dismiss_help", "Close"),
        Binding("question_mark", "dismiss_help", "Close"),
        Binding("q", "dismiss_help", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(HELP)

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
