"""Named pattern presets (``*.sf``), installed as the package data ``sparseflash._presets``.

Read them with :func:`sparseflash.load` and list them with :func:`sparseflash.presets`.
"""
