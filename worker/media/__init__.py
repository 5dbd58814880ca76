"""Media files: ``video`` (probe, streaming decode, re-encode with PyAV), ``segments``
(keyframe-aligned segments: index, decode one, join), ``image`` (album photos with their
metadata), ``deep`` (16-bit photos kept at their depth)."""
