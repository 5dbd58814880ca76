"""Many items at once: an ``archive`` job's items, ids and summary; identity across an archive
(``archive_identity``); S3 ``events`` that create items for the trigger; a user's reference
``library`` of named people."""
