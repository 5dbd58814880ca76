"""Decode + re-encode speed: our media layer (iter_frames + VideoRewriter) vs the ffmpeg CLI.

Both do the same job on the same clip: decode every frame, encode with the same encoder and
quality, copy the audio stream. Our path additionally converts every frame to BGR and back, which
is the price of handing numpy images to the restorer.

    python bench/bench_transcode.py [clip.mp4]

Default clip: the first file of $REFSTAR_REAL_DATA/videos (../shared/data/videos).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import default_clip  # noqa: E402
from worker.config import LimitsConfig, OutputConfig  # noqa: E402
from worker.media.video import VideoRewriter, iter_frames, pick_encoder, probe_video  # noqa: E402


def ours(src: Path, dst: Path, cfg: OutputConfig) -> float:
    t0 = time.perf_counter()
    info = probe_video(src, LimitsConfig())
    with VideoRewriter(src, dst, info, cfg) as writer:
        for frame in iter_frames(src, info):
            writer.write(frame)
    return time.perf_counter() - t0


def ffmpeg_cli(src: Path, dst: Path, encoder: str, crf: int) -> float:
    quality = ["-crf", str(crf)] if encoder.startswith("libx") else ["-q:v", str(max(1, round((crf - 10) / 4)))]
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-map", "0:v:0", "-map", "0:a?",
           "-c:v", encoder, *quality, "-c:a", "copy", str(dst)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else default_clip()
    cfg = OutputConfig()
    info = probe_video(src, LimitsConfig())
    encoder = pick_encoder(info, cfg)
    print(f"clip: {src.name}: {info.width}x{info.height} {info.frames} frames {info.avg_fps:.3f} fps "
          f"{info.codec} -> {encoder} crf {cfg.crf}; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        t_ours = ours(src, Path(tmp) / f"ours{src.suffix}", cfg)
        print(f"ours (PyAV, BGR numpy frames): {t_ours:.2f} s  ({info.frames / t_ours:.1f} fps)")
        if shutil.which("ffmpeg") is None:
            print("ffmpeg CLI not found; install it for the comparison: apt-get install -y ffmpeg")
            return
        t_cli = ffmpeg_cli(src, Path(tmp) / f"cli{src.suffix}", encoder, cfg.crf)
        print(f"ffmpeg CLI:                    {t_cli:.2f} s  ({info.frames / t_cli:.1f} fps)")
        print(f"ratio ours / ffmpeg: {t_ours / t_cli:.2f}")


if __name__ == "__main__":
    main()
