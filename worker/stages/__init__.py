"""The per-face stages, in the order an item runs them: ``analyse`` (pass 1: find, embed, track
and score every face: ``track``, ``quality``), ``plan`` (pass 2, no pixels: who is who with
``identity``, which faces become references with ``references``), ``restore`` (pass 3: cut
aligned crops, restore them, ``paste`` them back). Plain functions and classes: no Ray, no
storage, no orchestration; the item lifecycle (``worker.item``) runs them."""
