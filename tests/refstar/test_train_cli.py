"""`refstar train` from the command line on an identity-folder tree of aligned crops."""

import cv2
import numpy as np

from refstar.align import estimate_affine, warp_face
from tests.mediagen import face_box, face_photos
from worker.cli import main


def identity_tree(root) -> None:
    """``root/<person>/<k>.png``: three slightly different aligned crops of two people."""
    photos = face_photos()
    for person in ("t1_2", "hanks"):
        folder = root / person
        folder.mkdir(parents=True)
        x1, y1, x2, y2 = face_box(person)
        for k, shift in enumerate((0.0, 2.0, -2.0)):  # three slightly different crops each
            w = x2 - x1
            kps = [[x1 + 0.3 * w + shift, y1 + 0.4 * w], [x1 + 0.7 * w + shift, y1 + 0.4 * w],
                   [x1 + 0.5 * w, y1 + 0.6 * w], [x1 + 0.35 * w, y1 + 0.8 * w], [x1 + 0.65 * w, y1 + 0.8 * w]]
            crop = warp_face(photos[person], estimate_affine(np.array(kps, np.float32), 64), 64)
            cv2.imwrite(str(folder / f"{k}.png"), crop)


def test_refstar_train_writes_a_loadable_checkpoint(tmp_path, capsys):
    from refstar.checkpoint import latest, load_net

    identity_tree(tmp_path / "data")
    out = tmp_path / "run"
    code = main(["train", "--data", str(tmp_path / "data"), "--out", str(out), "--aligned",
                 "--preset", "tiny", "--size", "32", "--steps", "4", "--batch-size", "2",
                 "--num-workers", "0", "--ckpt-every", "2", "--device", "cpu"])
    assert code == 0
    assert '"step": 4' in capsys.readouterr().out
    net, meta = load_net(latest(out), "cpu")
    assert meta["step"] == 4
