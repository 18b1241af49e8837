"""The project's entry points, in the package so that every way users start
them works: ``tools/train.py`` in a checkout, ``python -m
mmsoftpool.tools.train``, the ``mmsoftpool-train`` console script, and
``mim train mmsoftpool CONFIG`` (which runs the copy under
``mmsoftpool/.mim/tools/``). ``test`` likewise."""
