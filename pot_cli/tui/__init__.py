"""``pot dashboard``: a live Textual dashboard of a miner and the validators it talks to.

The only package that imports textual. :mod:`~pot_cli.tui.sources` gathers what the APIs say as
:class:`~pot_cli.tui.sources.observation.Observation` s (live pollers in worker threads, a
recording, a replay), :mod:`~pot_cli.tui.state` folds them into one plain state, and the app's
widgets render that state a few times a second.
"""
