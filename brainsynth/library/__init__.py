"""The library: domain code that several plugins share, between the engine and the plugins.

`brainsynth.core` is the engine and the contracts; `brainsynth.plugins` hold components and tasks.
What more than one plugin needs (the MNI template, the volume transform chains, subject lists and
conditioning tables, token-grid folders, volume and preview files, perceptual networks, ...) lives
here in named modules, so that no plugin imports another plugin's internals. A library module may
import `brainsynth.core`, never a plugin. This package imports nothing itself: each module is
imported when it is used, so that ``brainsynth validate`` stays free of MONAI and matplotlib.
"""
