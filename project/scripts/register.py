"""Passed to ``spacy train`` / ``spacy assemble`` / ``spacy package`` with ``--code``: importing these modules
registers the spacy-led corpus readers and scorers the configs name (``spacy_led.SummaryCorpus.v1``,
``spacy_led.summary_scorer.v1``, ...). It works whether or not the installed spacy-led declares them as entry
points; the components and the architecture are always found through the package's entry points."""
import spacy_led.corpus  # noqa: F401
import spacy_led.scoring  # noqa: F401
