"""What people read: an item's ``report`` (manifest.json and report.html), and ``refstar eval``
(``evaluate``, ``evaluate_report``) scoring restored media against originals."""
