"""Labelling by hand: clips of the queries, a label database in the run folder and a labelling page.

`teacher="human"` (`pref-brl-train --teacher human`) offers each feedback round's queries on a page served by
the training process; `pref-brl-label RUN_DIR` serves the same page from another terminal. See docs/human.md.
"""
