"""The harness: the project's entry points and what only they use. The
plugin (``mmsoftpool.ops``, ``models``, ``engine``, ``datasets``,
``checkpoint``, ``registry``) never imports it.

- ``train``, ``test``: the entry points, in the package so that every way
  users start them works: ``tools/train.py`` in a checkout, ``python -m
  mmsoftpool.tools.train``, the ``mmsoftpool-train`` console script, and
  ``mim train mmsoftpool CONFIG`` (which runs the copy under
  ``mmsoftpool/.mim/tools/``). ``test`` likewise.
- ``launch``: what the command-line tools share (``UserError``,
  ``run_tool``, config loading, ``--cfg-options``, distributed setup).
- ``data_checks``: the data pre-flight check of ``train``, ``test`` and
  ``tools/misc/check_data.py``.
- ``analysis``: the image loading and pooling methods of
  ``tools/analysis_tools/pool_similarity.py`` and ``visualize_pooling.py``.
"""
