#!/usr/bin/env python3
# A function-preserving outlier variant of a float Vim model (the stress column of
# docs/quantization-vim.md): in every block and both scan directions, channel j of the δ path is
# scaled, W_xp[δ row j] ×F and W_dt[:, j] ÷F, which leaves dt_proj's output (and so the model)
# unchanged in exact arithmetic but gives dt_proj's input one channel F times larger than the
# others — the kind of dt-path outlier MambaQuant's R5 rotation exists for. Pure Python (no numpy).
# usage: vim_outlier_variant.py SRC_DIR OUT_DIR [--factor 50] [--channel 0]
import argparse, array, json, os, shutil, struct

ap = argparse.ArgumentParser()
ap.add_argument("src"); ap.add_argument("out")
ap.add_argument("--factor", type=float, default=50.0); ap.add_argument("--channel", type=int, default=0)
a = ap.parse_args()
cfg = json.load(open(os.path.join(a.src, "config.json")))
E, N, R, depth = cfg["d_inner"], cfg["d_state"], cfg["dt_rank"], cfg["depth"]
assert 0 <= a.channel < R and a.factor > 0
raw = open(os.path.join(a.src, "model.safetensors"), "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n]); data = raw[8 + n:]
tensors = {}
for name, t in header.items():
    if name == "__metadata__": continue
    assert t["dtype"] == "F32", name + ": only F32 models"
    b, e = t["data_offsets"]; arr = array.array("f"); arr.frombytes(data[b:e]); tensors[name] = (t["shape"], arr)
for i in range(depth):
    for sfx in ("", "_b"):
        xp = tensors["layers.%d.mixer.x_proj%s.weight" % (i, sfx)][1]   # [R + 2N, E]
        for k in range(E): xp[a.channel * E + k] *= a.factor
        dt = tensors["layers.%d.mixer.dt_proj%s.weight" % (i, sfx)][1]  # [E, R]
        for r in range(E): dt[r * R + a.channel] /= a.factor
os.makedirs(a.out)
hdr, off, blobs = {"__metadata__": {"format": "pt"}}, 0, []
for name in sorted(tensors):
    shape, arr = tensors[name]; bts = arr.tobytes()
    hdr[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(bts)]}; off += len(bts); blobs.append(bts)
h = json.dumps(hdr, separators=(",", ":")).encode(); h += b" " * ((8 - len(h) % 8) % 8)
with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h); [f.write(b) for b in blobs]
shutil.copy(os.path.join(a.src, "config.json"), os.path.join(a.out, "config.json"))
