"""Check pfcbench's record files against mxnet 1.9.1 itself, in both directions.

mxnet imports only with numpy < 1.24, so it lives in an environment of its own:

    python3.9 -m venv /tmp/mxenv
    /tmp/mxenv/bin/pip install 'numpy<1.24' mxnet==1.9.1 opencv-python-headless==4.7.0.72
    PYTHONPATH=$PWD python benchmarks/mxnet_recordio_check.py --mxnet-python /tmp/mxenv/bin/python

1. `pfcbench dataset make` writes a dataset; mxnet's MXIndexedRecordIO / recordio.unpack /
   image.imdecode read it (as MXFaceDataset does): the header record, every label, every image's
   shape, and the identity records' ranges must agree with what pfcbench wrote.
2. mxnet writes a dataset in insightface's layout (pack_img of each image, one identity record per
   class, the header at key 0, as insightface's dataset_merge.py does); pfcbench's FaceRecFile and
   its DataLoader read it: counts and labels must agree, and the decoded pixels must match mxnet's
   imdecode (both libjpeg; at most a small rounding difference).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def mxnet_side(ours: str, theirs: str, num_images: int, num_classes: int) -> None:
    """Runs under mxnet's Python: read pfcbench's files, write mxnet's, print what was seen as JSON."""
    import mxnet as mx
    import numpy as np

    rec = mx.recordio.MXIndexedRecordIO(f"{ours}/train.idx", f"{ours}/train.rec", "r")
    header, _ = mx.recordio.unpack(rec.read_idx(0))
    n_plus_1, end = int(header.label[0]), int(header.label[1])
    labels, shapes, means = [], set(), []
    for key in range(1, n_plus_1):
        h, jpeg = mx.recordio.unpack(rec.read_idx(key))
        label = h.label if isinstance(h.label, float) else h.label[0]
        labels.append(int(label))
        image = mx.image.imdecode(jpeg).asnumpy()
        shapes.add(image.shape)
        means.append(float(image.mean()))
    ranges = [[int(x) for x in mx.recordio.unpack(rec.read_idx(k))[0].label] for k in range(n_plus_1, end)]
    seen = {"header": [n_plus_1, end], "labels": labels, "shapes": sorted(shapes), "ranges": ranges, "means": means}

    rng = np.random.default_rng(1)
    out = mx.recordio.MXIndexedRecordIO(f"{theirs}/train.idx", f"{theirs}/train.rec", "w")
    key, identities, written, pixels = 1, [], [], []
    for label in range(num_classes):
        start = key
        for _ in range(num_images // num_classes):
            bgr = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
            out.write_idx(key, mx.recordio.pack_img(mx.recordio.IRHeader(0, label, key, 0), bgr, quality=95))
            written.append(label)
            key += 1
        identities.append((start, key))
    first_identity = key
    for start, stop in identities:
        out.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(1, (start, stop), key, 0), b""))
        key += 1
    out.write_idx(0, mx.recordio.pack(mx.recordio.IRHeader(1, (first_identity, key), 0, 0), b""))
    out.close()
    back = mx.recordio.MXIndexedRecordIO(f"{theirs}/train.idx", f"{theirs}/train.rec", "r")
    for k in range(1, first_identity):
        pixels.append(
            mx.image.imdecode(mx.recordio.unpack(back.read_idx(k))[1]).asnumpy().astype(int).sum(axis=(0, 1)).tolist()
        )
    seen["written_labels"], seen["written_pixel_sums"] = written, pixels
    magic = (0xCED7230A).to_bytes(4, "little")
    split = mx.recordio.MXRecordIO(f"{theirs}/split.rec", "w")
    split.write(b"head" + magic + b"middle!!" + magic + magic + b"tail5")
    split.close()
    seen["split_rec"] = open(f"{theirs}/split.rec", "rb").read().hex()
    seen["split_read"] = mx.recordio.MXRecordIO(f"{ours}/../split_ours.rec", "r").read().hex()
    print(json.dumps(seen))


def pfcbench_side(mxnet_python: str, num_images: int, num_classes: int) -> None:
    import torch

    from bench.recfiles.make import make_dataset
    from bench.workload.faces import FaceRecFile
    from bench.workload.recordio import MAGIC, write_rec

    MAGIC_BYTES = MAGIC.to_bytes(4, "little")
    from bench.workload.loader import LoaderOptions, rec_loader

    with tempfile.TemporaryDirectory() as scratch:
        ours, theirs = Path(scratch) / "ours", Path(scratch) / "theirs"
        made = make_dataset(ours, num_images, num_classes)
        theirs.mkdir()
        split_payload = b"head" + MAGIC_BYTES + b"middle!!" + MAGIC_BYTES + MAGIC_BYTES + b"tail5"
        with open(Path(scratch) / "split_ours.rec", "wb") as handle:
            write_rec(handle, split_payload)
        out = subprocess.run(
            [mxnet_python, __file__, "--mxnet-side", str(ours), str(theirs), str(num_images), str(num_classes)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        seen = json.loads(out.strip().splitlines()[-1])
        records = FaceRecFile(ours)
        want_labels = [records.image(i)[0] for i in range(made.num_images)]
        want_means = [float(records.image(i)[1].mean()) for i in range(made.num_images)]
        want_ranges = [
            [int(x) for x in records.read(k)[0].label] for k in range(made.num_images + 1, seen["header"][1])
        ]
        checks = {
            "mxnet reads pfcbench's header (N + 1, N + 1 + K)": seen["header"]
            == [num_images + 1, num_images + 1 + num_classes],
            "mxnet reads pfcbench's labels": seen["labels"] == want_labels,
            "a record holding the magic: pfcbench writes the parts mxnet writes": bytes.fromhex(seen["split_rec"])
            == (Path(scratch) / "split_ours.rec").read_bytes(),
            "a record holding the magic: mxnet reads pfcbench's parts whole": bytes.fromhex(seen["split_read"])
            == split_payload,
            "mxnet decodes every image to 112x112x3": seen["shapes"] == [[112, 112, 3]],
            "mxnet reads pfcbench's identity ranges": seen["ranges"] == want_ranges,
            "mxnet's imdecode = Pillow's decode (mean pixel, max diff < 0.5)": max(
                abs(a - b) for a, b in zip(seen["means"], want_means)
            )
            < 0.5,
        }
        theirs_records = FaceRecFile(theirs)
        got_labels = [theirs_records.image(i)[0] for i in range(theirs_records.num_images)]
        got_sums = [
            theirs_records.image(i)[1].astype(int).sum(axis=(0, 1)).tolist() for i in range(theirs_records.num_images)
        ]
        worst = max(
            abs(a - b) / (112 * 112) for x, y in zip(got_sums, seen["written_pixel_sums"]) for a, b in zip(x, y)
        )
        loader = rec_loader(theirs, LoaderOptions(batch_size=len(got_labels) // 2, num_workers=2), torch.device("cpu"))
        loaded = torch.cat([next(loader)[1] for _ in range(2)]).tolist()
        loader.close()
        checks |= {
            "pfcbench reads mxnet's counts (N, K)": (theirs_records.num_images, theirs_records.num_classes)
            == (num_images, num_classes),
            "pfcbench reads mxnet's labels": got_labels == seen["written_labels"],
            "pfcbench decodes mxnet's images as imdecode does (RGB, mean diff < 0.5 per channel)": worst < 0.5,
            "pfcbench's DataLoader reads every mxnet label once": sorted(loaded) == sorted(seen["written_labels"]),
        }
        print(f"pfcbench dataset: {made.num_images} images, mean {made.mean_image_bytes:.0f} bytes per JPEG")
        print(
            f"mxnet pack_img (random pixels): worst per-channel mean difference {worst:.3f}; "
            f"pfcbench vs imdecode mean-pixel diff {max(abs(a - b) for a, b in zip(seen['means'], want_means)):.4f}"
        )
        for name, ok in checks.items():
            print(f"{'ok  ' if ok else 'FAIL'} {name}")
        sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--mxnet-side":
        mxnet_side(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--mxnet-python", required=True, help="Python of an environment with mxnet 1.9.1")
        parser.add_argument("--images", type=int, default=200)
        parser.add_argument("--classes", type=int, default=10)
        args = parser.parse_args()
        pfcbench_side(args.mxnet_python, args.images, args.classes)
