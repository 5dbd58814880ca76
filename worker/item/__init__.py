"""The life of one item (a video, an album, one photo), the same under both executors:
``lifecycle`` (start: stage, analyse, plan; finish: restore, publish), its media-specific halves
``video_item`` and ``album_item``, work on video ``segments``, and what keeps outputs whole:
``staging`` (S3 inputs on local disk), ``input_cache``, ``publish`` (staged outputs swapped in
under a lock, ``_DONE`` last), ``litter`` (sweeping what killed runs left). ``pipeline`` is the
in-process executor; the Ray executor is ``jobs/items.py`` over ``worker.cluster``."""
