"""Face backends behind one interface (``base.FaceAnalyzer``): ``dlib_backend`` (models shipped
on PyPI, the offline default) and ``insightface_backend``; ``verify`` is the second opinion on
whether a detection is a face. Face geometry itself is ``refstar.align``."""
