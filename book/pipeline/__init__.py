"""The book's build, in parts (``book/build.py`` is the entry point the Makefile calls):

- ``common``: paths, ``BuildError``, logging;
- ``options``: the command line, and the ``-p/-r/-y/-f`` parameters it carries;
- ``chapters``: the chapters found in notebooks/, the parameters each declares, and their check
  against ``l2bn.chapter`` before anything runs;
- ``stamps``: what a chapter's execution depended on, and whether it changed;
- ``execute``: papermill, failure messages, the stamp written after a run;
- ``site``: the Sphinx sources (pages, configuration, table of contents) and ``jupyter-book build``;
- ``status``: the status page, from the stamps; ``publish``: alt text, the zip of notebooks, the
  repository and launch buttons (only with ``L2BN_REPOSITORY_URL``); ``solutions``: cutting the
  solutions out, for the handouts (``book/handouts.py``) and the student edition (``--solutions hide``);
- ``cli``: ``main``, which runs the parts in that order.
"""
