import signal
import sys

# A SIGTERM while the command line is still importing (a scheduler cancelling at once) is
# remembered here and ends the run like one a moment later: exit 143 with the message.
_pending: list[int] = []
signal.signal(signal.SIGTERM, lambda signum, frame: _pending.append(signum))

from .cli import main  # noqa: E402

sys.exit(main(pending_signals=_pending))
