"""The tools that work on a finished dataset: info, stats, preview, browse, validate, export,
evaluate (with ``metrics``), baseline, and doctor for the machine.  Import ``read`` and
``store``; nothing below imports them."""
